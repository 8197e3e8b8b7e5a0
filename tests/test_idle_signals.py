"""What lets an idle leader sleep instead of polling, on SQLite and Postgres: the change counter read again only when
another connection committed, the WAL watch that wakes on any commit, the probe that proves a LISTEN session hears
the jobs channel, and window slides that read nothing until the first pending one-off comes near, or something
changed (driven by a fake clock through the public methods the api-jobs loop calls)."""

from __future__ import annotations

import io
import select
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import dynoclock
from dynoclock.config.loader import Job, load_schedule
from dynoclock.daemon.apijobs import ApiJobs
from dynoclock.observe.logs import EventLog
from dynoclock.run.runner import Runner
from dynoclock.state.jobstore import CHANNEL, JobRow, JobStore
from dynoclock.state.ledger import Ledger
from dynoclock.state.walwatch import watch_wal
from tests.support.clock import FakeClock
from tests.support.processes import wait_until, write_schedule


def test_the_counter_sees_each_commit_of_another_connection(store: Ledger, state_db: str) -> None:
    counter = JobStore(store).counter()
    app = dynoclock.connect(state_db)
    before = counter.read()
    assert counter.read() == before  # nothing committed meanwhile: the same value
    app.add("a", every="1h", command="true")
    first = counter.read()
    assert first > before
    app.update("a", every="2h")
    assert counter.read() > first


@pytest.mark.postgres
def test_a_probe_sent_with_a_counter_read_reaches_a_listening_session(pg_schema_url: str) -> None:
    ledger = Ledger(pg_schema_url)
    ledger.ensure_schema()
    conninfo = ledger.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        JobStore(ledger).counter().read(probe="probe:1234")
        heard = [note.payload for note in listener.notifies(timeout=5.0, stop_after=1)]
    assert heard == ["probe:1234"]


def test_the_wal_watch_wakes_on_a_commit_of_another_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = Ledger(url)
    ledger.ensure_schema()
    watch = watch_wal(ledger.sqlite_path)
    assert watch is not None
    try:
        watch.drain()
        assert select.select([watch], [], [], 0)[0] == []
        dynoclock.connect(url).add("a", every="1h", command="true")
        assert select.select([watch], [], [], 5.0)[0] == [watch]
        assert watch.drain() is True
        assert select.select([watch], [], [], 0)[0] == []
    finally:
        watch.close()
    assert watch_wal(str(tmp_path / "none.db")) is None  # no WAL file: the caller polls


class Slots:
    def put(self, job: Job, since: datetime) -> None:
        pass

    def drop(self, job_id: str) -> None:
        pass


def test_slides_read_one_offs_once_the_first_pending_comes_near_or_after_a_change(
    tmp_path: Path, store: Ledger, state_db: str
) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    ledger = Ledger(store.url, clock=clock)
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    command: ['true']\n")))
    events = EventLog(io.StringIO(), fmt="json")
    runner = Runner(schedule, events, "me", ledger, clock=clock)
    fired: list[str] = []
    api = ApiJobs(ledger, runner, Slots(), lambda job, *_: fired.append(job), events, lambda: True, lambda: None, clock)
    reads: list[datetime] = []
    one_offs = api.store.one_offs

    def reading(after: datetime | None, until: datetime, limit: int | None = None) -> list[JobRow]:
        reads.append(until)
        return one_offs(after, until, limit)

    api.store.one_offs = reading  # type: ignore[method-assign]
    app = dynoclock.connect(state_db)
    start = clock.now()
    app.at(start + timedelta(seconds=200), key="far", command="true")
    api.lead_sync()  # the window reaches start + 60 s
    assert (api.window, len(reads)) == ({}, 1)
    clock.advance(30)
    api.slide()  # to start + 90 s: the first pending one-off is beyond it and nothing changed: nothing read
    assert (api.window, len(reads)) == ({}, 1)
    app.at(start + timedelta(seconds=95), key="near", command="true")  # beyond the window: not applied
    api.apply_changes()
    assert api.window == {}
    clock.advance(10)
    api.slide()  # to start + 100 s: a change came since the last read
    assert (set(api.window), len(reads)) == ({"near"}, 2)
    for _ in range(3):
        clock.advance(30)
        api.slide()  # to start + 130, 160, 190 s: nothing read
    assert len(reads) == 2
    wait_until(lambda: fired == ["near"], "near handed to its claim at its time")
    clock.advance(10)
    api.slide()  # to start + 200 s
    assert (set(api.window), len(reads)) == ({"far"}, 3)
