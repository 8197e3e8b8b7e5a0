"""What lets an idle leader sleep instead of polling, on SQLite and Postgres: the change counter read again only when
another connection committed, the WAL watch that wakes on any commit, the probe that proves a LISTEN session hears
the jobs channel, and window slides that read nothing until the first pending one-off comes near, or something
changed (driven by a fake clock through the public methods the api-jobs loop calls)."""

from __future__ import annotations

import gc
import io
import select
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import dynoclock
from dynoclock.config.loader import Job, load_schedule
from dynoclock.daemon.apijobs import POLL_HEARD, POLL_PG, ApiJobs
from dynoclock.observe.logs import EventLog
from dynoclock.run.runner import Runner
from dynoclock.state import changes
from dynoclock.state.jobstore import CHANNEL, SEQ_KEY, JobRow, JobStore
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


def hold_write_lock(path: str, bump: bool) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Another connection that takes the write lock (``taken`` set), raises the change counter if ``bump``, and
    commits once ``release`` is set: a commit whose frames are written but not yet visible, as the WAL watch sees."""
    taken, release = threading.Event(), threading.Event()

    def writer() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if bump:
                conn.execute(f"UPDATE clock_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = '{SEQ_KEY}'")
            taken.set()
            release.wait(30)
            conn.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert taken.wait(30)
    return taken, release, thread


def test_a_settled_read_waits_for_a_commit_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The WAL watch wakes the leader as a commit's first frames are written, before the commit is visible: a
    # plain read then sees the old value, a settled one waits for the writer's lock and sees the new one.
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    ledger.ensure_schema()
    dynoclock.connect(ledger.url).add("a", every="1h", command="true")  # the counter's row exists
    counter = JobStore(ledger).counter()
    before = counter.read()
    monkeypatch.setattr(changes, "SETTLE_WAIT_MS", 30_000)
    counter._raw = None  # the connection's lock wait is set as it is made
    _, release, writer = hold_write_lock(ledger.sqlite_path or "", bump=True)
    assert counter.read() == before  # not visible yet
    threading.Timer(0.2, release.set).start()  # the settled read below is waiting by then (or sees it anyway)
    assert counter.read_settled() == before + 1
    writer.join(30)


def test_a_settled_read_gives_up_on_a_lock_held_on_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    ledger.ensure_schema()
    monkeypatch.setattr(changes, "SETTLE_WAIT_MS", 50)
    counter = JobStore(ledger).counter()
    before = counter.read()
    _, release, writer = hold_write_lock(ledger.sqlite_path or "", bump=False)
    try:
        assert counter.read_settled() is None  # nothing read: the caller reads plainly and looks again later
    finally:
        release.set()
        writer.join(30)
    assert counter.read_settled() == before  # the lock is free again, and the connection still usable


def test_the_settled_reads_short_lock_wait_stays_on_its_own_connection(tmp_path: Path) -> None:
    # The counter's connection waits SETTLE_WAIT_MS for the write lock; the clock's other connections wait 15 s (a
    # write of theirs must not fail because another clock or the app holds the lock a moment). Once the counter is
    # gone its connection is closed, not given back to the pool with its short wait.
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    ledger.ensure_schema()
    counter = JobStore(ledger).counter()
    counter.read_settled()
    del counter
    gc.collect()
    raws = [ledger.engine.raw_connection() for _ in range(3)]  # the pool's, the counter's among them if it went back
    try:
        assert {raw.cursor().execute("PRAGMA busy_timeout").fetchone()[0] for raw in raws} == {15_000}
    finally:
        for raw in raws:
            raw.close()


def test_a_commit_on_a_quiet_wal_is_read_once_settled_with_no_second_look(tmp_path: Path) -> None:
    # Before, each WAL event was read at once and again WAL_GAP later, in case the first read came before the
    # commit: two wake-ups for each of the leader's own heartbeats, most of an idle SQLite clock's reads.
    url = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = Ledger(url)
    ledger.ensure_schema()
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    command: ['true']\n")))
    events = EventLog(io.StringIO(), fmt="json")
    runner = Runner(schedule, events, "me", ledger)
    api = ApiJobs(ledger, runner, Slots(), lambda *_: None, events, lambda: True, lambda: None)
    reads: list[str] = []
    plain, settled = api.counter.read, api.counter.read_settled

    def read(probe: str | None = None) -> int:
        reads.append("plain")
        return plain(probe)

    def read_settled(drain: Callable[[], object] = lambda: None) -> int | None:
        reads.append("settled")
        return settled(drain)

    api.counter.read, api.counter.read_settled = read, read_settled  # type: ignore[method-assign,assignment]
    api.start()
    try:
        wait_until(lambda: api.horizon is not None, "the loop synced")
        app = dynoclock.connect(url)
        app.add("a", every="1h", command="true")  # the WAL moved: it is relied on from now on, no poll
        wait_until(lambda: "a" in api.recurring, "the app's first job applied")
        api.stopped.wait(1.0)  # the WAL quiet for longer than WAL_GAP since the last read (and its second looks)
        reads.clear()
        app.add("b", every="1h", command="true")
        wait_until(lambda: "b" in api.recurring, "the app's second job applied")
        api.stopped.wait(1.0)  # a second look, WAL_GAP (0.25 s) after the first, would have come by now
        assert reads == ["settled", "plain"]  # the loop's settled read, then apply_changes' own
    finally:
        api.stopped.set()


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


@pytest.mark.postgres
def test_a_probe_is_checked_at_the_next_poll_not_a_second_after_it(tmp_path: Path, pg_schema_url: str) -> None:
    # Each poll on Postgres sends a probe on the jobs channel; whether the one before came back decides the wait
    # until the next poll. Asked a second after each probe instead, every probe cost a second read.
    clock = FakeClock(datetime.now(UTC))
    ledger = Ledger(pg_schema_url, clock=clock)
    ledger.ensure_schema()
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    command: ['true']\n")))
    events = EventLog(io.StringIO(), fmt="json")
    api = ApiJobs(ledger, Runner(schedule, events, "me", ledger, clock=clock), Slots(), lambda *_: None, events,
                  lambda: True, lambda: None, clock)  # fmt: skip
    api._next_probe = clock.monotonic()  # as the listen thread sets it once LISTEN is on
    assert api._probing() is not None and api._poll() == POLL_PG  # no probe came back yet
    api._heard = True  # the listen thread heard it
    clock.advance(POLL_PG)
    assert api._probing() is not None and api._poll() == POLL_HEARD  # the last one came back: NOTIFY is relied on
    api._heard = True
    clock.advance(POLL_HEARD)
    assert api._probing() is not None and api._poll() == POLL_HEARD
    clock.advance(POLL_HEARD)  # that one never came back: polled every POLL_PG again, each poll with a probe
    assert api._probing() is not None and api._poll() == POLL_PG
    clock.advance(POLL_PG)
    assert api._probing() is not None
