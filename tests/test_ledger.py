"""The run ledger on SQLite and Postgres alike: claims are won once, history reads back, housekeeping is safe."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import SchemaTooNew
from dynoclock.state.tables import SCHEMA_VERSION, meta
from tests.support.clock import FakeClock
from tests.support.history import finish_run, start_run
from tests.support.state import all_runs, forget_engine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rid() -> str:
    return uuid.uuid4().hex[:16]


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


# ---- claims ---------------------------------------------------------------------------


def test_second_claim_of_a_slot_loses(store: Ledger) -> None:
    assert store.claim(rid(), "tick", T0, "clock-a") is True
    assert store.claim(rid(), "tick", T0, "clock-b") is False
    (run,) = all_runs(store)
    assert (run.job, run.scheduled_for, run.status, run.clock, run.reason) == (
        "tick",
        T0,
        "claimed",
        "clock-a",
        "schedule",
    )


def test_same_instant_of_other_jobs_and_other_instants_are_other_slots(store: Ledger) -> None:
    assert store.claim(rid(), "tick", T0, "a")
    assert store.claim(rid(), "tock", T0, "a")
    assert store.claim(rid(), "tick", T0 + timedelta(seconds=1), "a")
    assert len(all_runs(store)) == 3


def test_sixteen_threads_racing_for_one_slot_win_it_once(store: Ledger) -> None:
    barrier = threading.Barrier(16)
    results: dict[int, bool | BaseException] = {}

    def contend(i: int) -> None:
        barrier.wait()
        try:
            results[i] = store.claim(f"run{i:02d}", "tick", T0, f"clock-{i}")
        except BaseException as exc:  # an error is a failure of its own, reported below
            results[i] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(repr, results.values())) == ["False"] * 15 + ["True"], results
    (run,) = all_runs(store)
    winner = next(i for i, won in results.items() if won is True)
    assert (run.run_id, run.clock) == (f"run{winner:02d}", f"clock-{winner}")


def test_slots_are_stored_in_utc_whatever_the_offset_given(store: Ledger) -> None:
    eastern = T0.astimezone(ZoneInfo("America/New_York"))
    assert store.claim(rid(), "tick", eastern, "a")
    assert store.claim(rid(), "tick", T0, "b") is False  # the same instant, however written
    assert all_runs(store)[0].scheduled_for == T0
    assert all_runs(store)[0].scheduled_for.utcoffset() == timedelta(0)


# ---- a run's life -------------------------------------------------------------------------


def test_started_and_finished_update_the_claimed_row(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    start_run(store, run_id, 1, "clock-a")
    (run,) = all_runs(store)
    assert (run.status, run.attempt, run.finished_at) == ("running", 1, None)
    assert run.started_at is not None and run.started_at >= run.claimed_at
    start_run(store, run_id, 2, "clock-a")  # a retry: the second attempt
    finish_run(store, run_id, "failed", "exit=3: no such table", 42)
    (run,) = all_runs(store)
    assert (run.status, run.attempt, run.error, run.duration_ms) == ("failed", 2, "exit=3: no such table", 42)
    assert run.finished_at is not None and run.started_at is not None and run.finished_at >= run.started_at


def test_finished_ok_clears_no_error_text(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "a")
    start_run(store, run_id, 1, "a")
    finish_run(store, run_id, "ok", "", 7)  # the runner passes "" for no error: stored as NULL
    (run,) = all_runs(store)
    assert (run.status, run.error, run.duration_ms) == ("ok", None, 7)


def test_record_fills_a_free_slot_but_never_an_already_claimed_one(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", minutes(1), "a")
    assert store.record("tick", minutes(1), "missed", "b", "no clock was leading") is False
    assert store.record("tick", minutes(2), "missed", "b", "no clock was leading") is True
    assert store.record("tick", minutes(2), "skipped", "c", "again") is False
    first, second = all_runs(store)
    assert (first.run_id, first.status, first.clock, first.error) == (run_id, "claimed", "a", None)
    assert (second.status, second.clock, second.error) == ("missed", "b", "no clock was leading")
    assert second.finished_at is not None


# ---- history ------------------------------------------------------------------------------


def seed_history(store: Ledger) -> None:
    for i in (3, 1, 4, 2, 5):  # not in order: history orders them
        store.record("tick", minutes(i), "missed", "a", f"tick {i}")
    for i in (0, 6):
        store.record("tock", minutes(i), "missed", "a", f"tock {i}")


def test_history_is_newest_first(store: Ledger) -> None:
    seed_history(store)
    assert [(r.job, r.scheduled_for) for r in store.history()] == [
        ("tock", minutes(6)), ("tick", minutes(5)), ("tick", minutes(4)), ("tick", minutes(3)),
        ("tick", minutes(2)), ("tick", minutes(1)), ("tock", minutes(0)),
    ]  # fmt: skip


def test_history_filters_by_job_and_honours_limit(store: Ledger) -> None:
    seed_history(store)
    assert [r.scheduled_for for r in store.history("tick")] == [minutes(i) for i in (5, 4, 3, 2, 1)]
    assert [r.error for r in store.history("tock")] == ["tock 6", "tock 0"]
    assert [r.scheduled_for for r in store.history("tick", limit=2)] == [minutes(5), minutes(4)]
    assert [r.scheduled_for for r in store.history("tick", limit=2, offset=2)] == [minutes(3), minutes(2)]
    assert [r.job for r in store.history(limit=1)] == ["tock"]
    assert store.history("nope") == []


def test_last_slots_ignore_manual_runs(store: Ledger) -> None:
    store.claim(rid(), "tick", minutes(1), "a")
    store.claim(rid(), "tick", minutes(9), "a:manual", reason="manual")  # `run tick` now: not a slot
    store.record("tock", minutes(2), "missed", "a", "down")
    store.record("tock", minutes(3), "skipped", "a", "coalesced", reason="catch_up")
    store.claim(rid(), "only-manual", minutes(5), "a:manual", reason="manual")
    assert store.last_slots() == {"tick": minutes(1), "tock": minutes(3)}


def test_catch_up_reads_of_many_jobs_in_chunks_match_each_job_read_alone(
    store: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs read a chunk a statement (ids as JSON), over several chunks and two `since` groups: each job's latest
    slot before its `since` and its slots from it to `until`, manual runs left out, jobs with no row included."""
    since = {f"job-{n:02d}": minutes(10 if n % 3 else 20) for n in range(23)}
    for n, job in enumerate(since):
        if n % 4 == 0:
            continue  # no row at all
        for m in (2, 9, 10, 12, 20, 25, 40):
            if (n + m) % 3:
                store.claim(rid(), job, minutes(m), "a")
        store.claim(rid(), job, minutes(11), "a:manual", reason="manual")
    alone = {job: store.catch_up_slots(job, moment, minutes(30)) for job, moment in since.items()}
    monkeypatch.setattr("dynoclock.state.ledger.CATCH_UP_CHUNK", 5)
    assert store.catch_up_slots_of(since, minutes(30)) == alone
    assert alone["job-01"] == (minutes(9), [minutes(10), minutes(12), minutes(25)])
    assert alone["job-03"] == (minutes(10), [minutes(20), minutes(25)])  # since 20: 2 and 10 before it
    assert alone["job-04"] == (None, [])


# ---- runs of dead clocks --------------------------------------------------------------------


def heartbeat_at(store: Ledger, clock: str, moment: datetime, role: str = "leader") -> None:
    """``clock`` sends a heartbeat at ``moment`` (through a ledger whose time stands at that instant)."""
    Ledger(store.url, clock=FakeClock(moment)).heartbeat(clock, role, moment)


def seed_unfinished(store: Ledger) -> dict[str, str]:
    """Rows of a live clock, a clock silent for a minute, and a clock with no heartbeat at all."""
    now = datetime.now(UTC)
    heartbeat_at(store, "live", now)
    heartbeat_at(store, "silent", now - timedelta(minutes=1))
    ids: dict[str, str] = {}
    rows = [("live", "claimed"), ("live", "running"), ("silent", "claimed"), ("silent", "running"),
            ("silent", "ok"), ("gone", "running"), ("gone", "failed")]  # fmt: skip
    for n, (clock, status) in enumerate(rows):
        run_id = ids[f"{clock}-{status}"] = rid()
        store.claim(run_id, "tick", minutes(n), clock)
        if status != "claimed":
            start_run(store, run_id, 1, clock)
        if status not in ("claimed", "running"):
            finish_run(store, run_id, status, None, 1)
    return ids


def test_unfinished_returns_claimed_and_running_rows_of_dead_clocks_only(
    store: Ledger,
) -> None:
    ids = seed_unfinished(store)
    found = store.unfinished(datetime.now(UTC) - timedelta(seconds=20))
    assert sorted(r.run_id for r in found) == sorted(
        [ids["silent-claimed"], ids["silent-running"], ids["gone-running"]]
    )
    assert {r.status for r in found} == {"claimed", "running"}


def test_unfinished_counts_a_clock_dead_only_once_its_heartbeat_is_older_than_asked(
    store: Ledger,
) -> None:
    ids = seed_unfinished(store)
    found = store.unfinished(datetime.now(UTC) - timedelta(minutes=5))  # the silent clock is not dead yet
    assert [r.run_id for r in found] == [ids["gone-running"]]


def test_reclaim_takes_a_run_once(store: Ledger) -> None:
    seed_unfinished(store)
    run = next(r for r in store.unfinished(datetime.now(UTC)) if r.clock == "silent" and r.status == "running")
    assert store.reclaim(run, "new") is True
    assert store.reclaim(run, "other") is False  # the row is no longer what ``run`` saw
    assert store.interrupt(run, "clock silent stopped during the run") is False
    row = next(r for r in all_runs(store) if r.run_id == run.run_id)
    assert (row.status, row.clock, row.reason, row.error) == ("claimed", "new", "retry", None)


def test_interrupt_takes_a_run_once(store: Ledger) -> None:
    seed_unfinished(store)
    run = next(r for r in store.unfinished(datetime.now(UTC)) if r.clock == "gone")
    assert store.interrupt(run, "clock gone stopped during the run") is True
    assert store.interrupt(run, "again") is False
    assert store.reclaim(run, "new") is False
    row = next(r for r in all_runs(store) if r.run_id == run.run_id)
    assert (row.status, row.error, row.clock) == ("interrupted", "clock gone stopped during the run", "gone")
    assert row.finished_at is not None
    assert run.run_id not in {r.run_id for r in store.unfinished(datetime.now(UTC))}


def test_eight_clocks_racing_to_close_a_dead_run_take_it_once(store: Ledger) -> None:
    seed_unfinished(store)
    run = next(r for r in store.unfinished(datetime.now(UTC)) if r.clock == "gone")
    barrier = threading.Barrier(8)
    won: list[bool] = []

    def contend(i: int) -> None:
        barrier.wait()
        won.append(store.reclaim(run, f"c{i}") if i % 2 else store.interrupt(run, f"by c{i}"))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won) == [False] * 7 + [True]


def test_a_leader_heartbeat_marks_until_when_a_clock_led(store: Ledger) -> None:
    assert store.led_until() is None  # no clock ever led here
    heartbeat_at(store, "standby", minutes(1), role="standby")
    assert store.led_until() is None
    heartbeat_at(store, "leader", minutes(2))
    assert store.led_until() == minutes(2)
    heartbeat_at(store, "standby", minutes(3), role="standby")
    heartbeat_at(store, "leader", minutes(3), role="stopping")
    assert store.led_until() == minutes(2)


# ---- pruning --------------------------------------------------------------------------------


def test_prune_deletes_only_finished_rows_older_than_the_cutoff_one_batch_per_call(store: Ledger) -> None:
    old = [minutes(i) for i in range(5)]
    for slot, status in zip(old, ["ok", "missed", "failed", "interrupted", "skipped"], strict=True):
        run_id = rid()
        store.claim(run_id, "tick", slot, "a")
        finish_run(store, run_id, status, None, 1)
    store.claim(rid(), "tick", minutes(5), "a")  # old but still claimed
    running = rid()
    store.claim(running, "tick", minutes(6), "a")
    start_run(store, running, 1, "a")  # old but still running
    recent = rid()
    store.claim(recent, "tick", minutes(60), "a")
    finish_run(store, recent, "ok", None, 1)
    cutoff = minutes(30)

    assert store.prune(cutoff, batch=2) == 2
    assert len(all_runs(store)) == 6
    assert store.prune(cutoff, batch=2) == 2
    assert store.prune(cutoff, batch=2) == 1
    assert store.prune(cutoff, batch=2) == 0
    left = all_runs(store)
    assert [(r.scheduled_for, r.status) for r in left] == [
        (minutes(5), "claimed"),
        (minutes(6), "running"),
        (minutes(60), "ok"),
    ]


def test_prune_keeps_a_row_exactly_at_the_cutoff(store: Ledger) -> None:
    store.record("tick", minutes(10), "missed", "a", "down")
    assert store.prune(minutes(10)) == 0
    assert store.prune(minutes(10) + timedelta(microseconds=1)) == 1


# ---- the schema -----------------------------------------------------------------------------


def _ensure(urls: list[str], barrier: Barrier, results: Queue[str]) -> None:
    """In a fresh process: for each empty database, wait for the other process, then create the schema at once."""
    for url in urls:
        try:
            ledger = Ledger(url)
            barrier.wait(timeout=60)
            ledger.ensure_schema()
            results.put("ok")
        except BaseException as exc:
            results.put(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def empty_state(state_db: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[int], str]:
    """A new empty state database each call: a fresh SQLite file, or a fresh Postgres schema."""

    def make(i: int) -> str:
        if state_db.startswith("sqlite"):
            return f"sqlite:///{tmp_path / f'race-{i}.db'}"
        new_schema: Callable[[], str] = request.getfixturevalue("pg_schemas")
        return new_schema()

    return make


def test_two_processes_creating_the_schema_at_once_both_succeed(empty_state: Callable[[int], str]) -> None:
    urls = [empty_state(i) for i in range(6)]
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no engine or connection inherited
    barrier = ctx.Barrier(2)
    results: Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(urls, barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=90) for _ in range(2 * len(urls))]
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * len(outcomes)
    for url in urls:
        ledger = Ledger(url)
        assert ledger.claim(rid(), "tick", T0, "a")  # the tables work
        with ledger.engine.connect() as conn:
            versions = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalars().all()
        assert versions == [str(SCHEMA_VERSION)]
        forget_engine(url)


def test_schema_version_is_recorded_and_ensure_schema_is_idempotent(store: Ledger) -> None:
    store.ensure_schema()
    store.ensure_schema()
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(meta.c.key, meta.c.value)).all()
    assert [tuple(row) for row in rows] == [("schema_version", str(SCHEMA_VERSION))]


def test_a_database_with_a_newer_schema_is_refused_with_a_clear_error(store: Ledger) -> None:
    store.claim(rid(), "tick", T0, "a")
    with store.engine.begin() as conn:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(
        SchemaTooNew,
        match=rf"the state database has schema {SCHEMA_VERSION + 1}, newer than this clock's {SCHEMA_VERSION}",
    ):
        Ledger(store.url).ensure_schema()
    with store.engine.connect() as conn:  # refused, not downgraded
        assert conn.execute(sa.select(meta.c.value)).scalar() == str(SCHEMA_VERSION + 1)
    assert len(all_runs(store)) == 1
