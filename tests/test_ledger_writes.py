"""The ledger's production write paths, on SQLite and Postgres alike, checked against the table itself.

Batch claims (won once, retried under the same run ids after a lost reply), batched row updates, giving a
claim back, recording slots that did not run, closing runs of dead clocks, and pruning.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from dynoclock.state import engines as db
from dynoclock.state.controls import Controls
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim, Run
from dynoclock.state.schema import qualified
from dynoclock.state.tables import clocks, runs, to_db
from tests.support.state import all_runs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rid() -> str:
    return uuid.uuid4().hex


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def table(store: Ledger) -> dict[tuple[str, datetime], Run]:
    """Every row of clock_runs, keyed by its slot (job, scheduled_for); fails if a slot has two rows."""
    rows = all_runs(store)
    by_slot = {(r.job, r.scheduled_for): r for r in rows}
    assert len(by_slot) == len(rows), "two rows for one slot"
    return by_slot


def row(store: Ledger, run_id: str) -> Run:
    (found,) = [r for r in all_runs(store) if r.run_id == run_id]
    return found


def set_heartbeat(store: Ledger, clock: str, moment: datetime) -> None:
    """A clock row whose last heartbeat was at ``moment`` (written as the clock wrote it, then moved)."""
    store.heartbeat(clock, "leader", moment)
    with store.engine.begin() as conn:
        conn.execute(clocks.update().where(clocks.c.clock == clock).values(heartbeat_at=to_db(moment)))


# ---- claim_many -----------------------------------------------------------------------------


def test_batch_claim_of_free_slots_wins_every_one(store: Ledger) -> None:
    claims = [Claim(rid(), "tick", minutes(i), "clock-a", reason="catch_up") for i in range(40)]
    before = datetime.now(UTC)
    assert store.claim_many(claims) == {c.run_id for c in claims}
    rows = table(store)
    assert sorted(rows) == [("tick", minutes(i)) for i in range(40)]
    for claim in claims:
        got = rows[("tick", claim.slot)]
        assert (got.run_id, got.status, got.clock, got.reason, got.attempt) == (
            claim.run_id, "claimed", "clock-a", "catch_up", 0,
        )  # fmt: skip
        assert (got.started_at, got.finished_at, got.error, got.duration_ms) == (None, None, None, None)
        assert got.claimed_at >= before - timedelta(seconds=1)


def test_batch_claim_returns_only_the_slots_no_other_clock_claimed_first(store: Ledger) -> None:
    theirs = {i: rid() for i in (1, 3, 4)}
    for i, run_id in theirs.items():
        assert store.claim(run_id, "tick", minutes(i), "clock-b")
    claims = [Claim(rid(), "tick", minutes(i), "clock-a") for i in range(6)]
    won = store.claim_many(claims)
    assert won == {claims[i].run_id for i in (0, 2, 5)}
    rows = table(store)
    assert len(rows) == 6
    for i in range(6):
        got = rows[("tick", minutes(i))]
        expected = (theirs[i], "clock-b") if i in theirs else (claims[i].run_id, "clock-a")
        assert (got.run_id, got.clock) == expected


def test_batch_claim_retried_after_a_lost_reply_counts_as_won_and_creates_no_second_row(store: Ledger) -> None:
    # The first try committed; its answer was lost with the connection. The dispatcher retries the same
    # Claim list (same run ids): what it won the first time is still won, and nothing is inserted twice.
    taken = rid()
    assert store.claim(taken, "tick", minutes(2), "clock-b")
    claims = [Claim(rid(), "tick", minutes(i), "clock-a") for i in range(5)]
    first = store.claim_many(claims)
    before = table(store)
    second = store.claim_many(claims)
    assert first == second == {c.run_id for i, c in enumerate(claims) if i != 2}
    assert table(store) == before  # same rows, same claimed_at: nothing re-inserted or touched
    assert len(before) == 5


def test_batch_claim_of_an_empty_list_wins_nothing_and_writes_nothing(store: Ledger) -> None:
    assert store.claim_many([]) == set()
    assert all_runs(store) == []


def test_slots_a_microsecond_apart_are_claimed_separately_and_read_back_exactly(store: Ledger) -> None:
    slots = [T0, T0 + timedelta(microseconds=1), T0 + timedelta(microseconds=2), T0 + timedelta(microseconds=999999)]
    claims = [Claim(rid(), "tick", slot, "clock-a") for slot in slots]
    assert store.claim_many(claims) == {c.run_id for c in claims}
    assert store.claim_many([Claim(rid(), "tick", slots[1], "clock-b")]) == set()
    rows = table(store)
    assert sorted(slot for _, slot in rows) == slots
    assert [rows[("tick", c.slot)].run_id for c in claims] == [c.run_id for c in claims]


def test_two_clocks_claiming_overlapping_batches_at_once_win_every_slot_exactly_once(store: Ledger) -> None:
    clock_a, clock_b = Ledger(store.url), Ledger(store.url)  # two clocks on one state database
    rounds = 6
    results: dict[tuple[str, int], set[str] | BaseException] = {}
    batches: dict[tuple[str, int], list[Claim]] = {}
    for n in range(rounds):
        job = f"job{n}"
        # Overlapping halves, both in time order (as each clock's scheduler fires them).
        batches["a", n] = [Claim(rid(), job, minutes(i), "clock-a") for i in range(0, 40)]
        batches["b", n] = [Claim(rid(), job, minutes(i), "clock-b") for i in range(20, 60)]
    barrier = threading.Barrier(2)

    def clock(name: str, ledger: Ledger) -> None:
        for n in range(rounds):
            barrier.wait(timeout=60)
            try:
                results[name, n] = ledger.claim_many(batches[name, n])
            except BaseException as exc:  # reported by the assertion below
                results[name, n] = exc

    threads = [threading.Thread(target=clock, args=(n, ledger)) for n, ledger in (("a", clock_a), ("b", clock_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    errors = {key: value for key, value in results.items() if isinstance(value, BaseException)}
    assert not errors
    rows = table(store)
    assert len(rows) == rounds * 60
    for n in range(rounds):
        won_a, won_b = results["a", n], results["b", n]
        assert isinstance(won_a, set) and isinstance(won_b, set)
        by_id = {c.run_id: c for c in batches["a", n] + batches["b", n]}
        winners = {(c.job, c.slot): c for c in (by_id[i] for i in won_a | won_b)}
        assert len(winners) == len(won_a | won_b) == 60  # each slot won by exactly one of the two
        for slot_key, claim in winners.items():
            assert (rows[slot_key].run_id, rows[slot_key].clock) == (claim.run_id, claim.clock)
        # The slots only one clock asked for are that clock's.
        assert {by_id[i].slot for i in won_a} >= {minutes(i) for i in range(20)}
        assert {by_id[i].slot for i in won_b} >= {minutes(i) for i in range(40, 60)}


def _blocked_by(pg_admin: sa.Engine, pid: int) -> int:
    """The backend waiting on a lock held by backend ``pid`` (polled until there is one)."""
    deadline = time.monotonic() + 30
    while True:
        with pg_admin.connect() as conn:
            found = conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE :p = ANY(pg_blocking_pids(pid))"), {"p": pid}
            ).scalar()
        if found is not None:
            return int(found)
        assert time.monotonic() < deadline, f"nothing waits on backend {pid}"
        time.sleep(0.02)


@pytest.mark.postgres
def test_batch_claims_of_overlapping_slots_in_different_orders_do_not_deadlock_on_postgres(
    pg_schema_url: str, pg_admin: sa.Engine
) -> None:
    clock_a, clock_b = Ledger(pg_schema_url), Ledger(pg_schema_url)
    clock_a.ensure_schema()
    s1, s2, s3 = minutes(1), minutes(2), minutes(3)
    results: dict[str, set[str] | BaseException] = {}

    def claim(name: str, ledger: Ledger, claims: list[Claim]) -> None:
        try:
            results[name] = ledger.claim_many(claims)
        except BaseException as exc:
            results[name] = exc

    # A third clock's transaction, held open between two of its inserts, lines the others up deterministically.
    third = sa.create_engine(db.normalize_url(pg_schema_url), poolclass=sa.pool.NullPool)

    def insert(conn: sa.Connection, slot: datetime) -> None:
        values = {"run_id": rid(), "job": "tick", "scheduled_for": slot.replace(tzinfo=None),
                  "claimed_at": slot.replace(tzinfo=None), "status": "claimed", "clock": "clock-c"}  # fmt: skip
        conn.execute(postgresql.insert(runs).values(**values).on_conflict_do_nothing())

    threads = []
    try:
        with third.connect() as conn:
            c_pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            insert(conn, s2)
            a = [Claim(rid(), "tick", s1, "clock-a"), Claim(rid(), "tick", s2, "clock-a")]
            threads.append(threading.Thread(target=claim, args=("a", clock_a, a)))
            threads[-1].start()
            a_pid = _blocked_by(pg_admin, c_pid)  # A holds s1, waits for s2
            b = [Claim(rid(), "tick", s3, "clock-b"), Claim(rid(), "tick", s1, "clock-b")]
            threads.append(threading.Thread(target=claim, args=("b", clock_b, b)))
            threads[-1].start()
            _blocked_by(pg_admin, a_pid)  # B waits for A
            insert(conn, s3)
            conn.commit()
    finally:
        for thread in threads:
            thread.join(timeout=60)
        third.dispose()
    assert all(isinstance(value, set) for value in results.values()), results
    rows = table(clock_a)
    assert sorted(slot for _, slot in rows) == [s1, s2, s3]
    won = set().union(*(value for value in results.values() if isinstance(value, set)))
    assert won == {r.run_id for r in rows.values() if r.clock != "clock-c"}


def test_a_retried_batch_claim_is_not_won_once_another_clock_has_reclaimed_the_run(store: Ledger) -> None:
    claims = [Claim(rid(), "tick", minutes(1), "clock-a")]
    store.claim_many(claims)  # committed, but clock-a never got the answer (the database went away)
    # clock-a keeps no heartbeat meanwhile: to clock-b it is dead, and its claimed run is taken over.
    (run,) = store.unfinished(datetime.now(UTC))
    assert store.reclaim(run, "clock-b")
    assert store.claim_many(claims) == set()  # clock-a's retry must not run the slot as well
    assert (row(store, claims[0].run_id).clock, row(store, claims[0].run_id).reason) == ("clock-b", "retry")


# ---- update_runs ----------------------------------------------------------------------------


def test_update_runs_applies_rows_of_different_shapes_in_one_call(store: Ledger) -> None:
    # Five rows of one shape (one statement from JSON, state/bulk.py) and two of another (one statement each).
    ids = [rid() for _ in range(8)]
    assert store.claim_many([Claim(run_id, "tick", minutes(i), "clock-a") for i, run_id in enumerate(ids)])
    before = {r.run_id: r for r in all_runs(store)}
    started: dict[str, dict[str, Any]] = {
        ids[i]: {"status": "running", "started_at": minutes(10 + i), "attempt": i + 1, "clock": f"c{i}"}
        for i in range(5)
    }
    finished: dict[str, dict[str, Any]] = {
        ids[5]: {"status": "ok", "error": None, "duration_ms": 1500, "finished_at": minutes(20)},
        ids[6]: {"status": "failed", "error": "exit=3: no such table", "duration_ms": 7, "finished_at": minutes(21)},
    }
    store.update_runs({**started, **finished})
    after = {r.run_id: r for r in all_runs(store)}
    for run_id, values in {**started, **finished}.items():
        assert after[run_id] == dataclasses.replace(before[run_id], **values)
    assert after[ids[7]] == before[ids[7]]  # not in the call: untouched


def test_update_runs_for_an_unknown_run_id_changes_nothing(store: Ledger) -> None:
    ids = [rid() for _ in range(3)]
    store.claim_many([Claim(run_id, "tick", minutes(i), "clock-a") for i, run_id in enumerate(ids)])
    before = table(store)
    store.update_runs({"0" * 32: {"status": "ok", "finished_at": minutes(5), "error": None, "duration_ms": 1}})
    assert table(store) == before
    store.update_runs({"f" * 32: {"status": "failed"}, ids[1]: {"status": "failed"}})
    after = table(store)
    assert len(after) == 3
    assert [after["tick", minutes(i)].status for i in range(3)] == ["claimed", "failed", "claimed"]


def test_update_runs_stores_aware_datetimes_as_the_same_instant_in_utc(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    started = datetime(2026, 3, 1, 7, 0, 1, 123456, tzinfo=ZoneInfo("America/New_York"))  # 12:00:01.123456Z
    finished = datetime(2026, 3, 1, 17, 31, 2, 654321, tzinfo=ZoneInfo("Asia/Kolkata"))  # 12:01:02.654321Z
    store.update_runs({run_id: {"status": "ok", "started_at": started, "finished_at": finished}})
    got = row(store, run_id)
    assert (got.started_at, got.finished_at) == (started, finished)  # the same instants ...
    assert got.started_at is not None and got.finished_at is not None
    assert got.started_at.utcoffset() == got.finished_at.utcoffset() == timedelta(0)  # ... read back in UTC
    with store.engine.connect() as conn:  # stored as UTC wall time, not New York's or Kolkata's
        raw = conn.execute(sa.select(runs.c.started_at, runs.c.finished_at)).one()
    assert tuple(raw) == (datetime(2026, 3, 1, 12, 0, 1, 123456), datetime(2026, 3, 1, 12, 1, 2, 654321))


# ---- unclaim --------------------------------------------------------------------------------


def test_rows_updated_together_are_stored_exactly_as_a_row_updated_alone(store: Ledger) -> None:
    # Many rows go as one JSON text (state/bulk.py), one row through SQLAlchemy's own statement: the stored values
    # must be the same to the byte (SQLite compares instants as text), and a later single-row read must agree.
    alone, together = rid(), [rid() for _ in range(5)]
    store.claim_many([Claim(r, "tick", minutes(i), "clock-a") for i, r in enumerate([alone, *together])])
    started = datetime(2026, 3, 1, 7, 0, 1, tzinfo=ZoneInfo("America/New_York"))  # whole second: no fraction
    values = {"status": "ok", "started_at": started, "finished_at": minutes(30), "error": None, "duration_ms": 5}
    store.update_runs({alone: values})
    store.update_runs(dict.fromkeys(together, values))
    columns = "run_id, started_at, finished_at, status, error, duration_ms"
    with store.engine.connect() as conn:  # what the driver holds: text on SQLite
        rows = conn.exec_driver_sql(f"SELECT {columns} FROM {qualified(store.schema, 'clock_runs')}")
        raw = {r: tuple(v) for r, *v in rows}
    assert {raw[r] for r in together} == {raw[alone]}
    assert store.begin([(r, 2, minutes(40)) for r in together], "clock-a") == set()  # finished: not begun again


def test_unclaim_deletes_a_claim_that_never_started_so_the_slot_is_free_again(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    assert store.unclaim(run_id) is True
    assert all_runs(store) == []
    assert store.unclaim(run_id) is False  # already gone
    assert store.claim(rid(), "tick", T0, "clock-b") is True  # the next leader can run the slot


def test_unclaim_leaves_a_running_or_finished_run_alone(store: Ledger) -> None:
    running, done = rid(), rid()
    store.claim_many([Claim(running, "tick", minutes(1), "clock-a"), Claim(done, "tick", minutes(2), "clock-a")])
    store.update_runs({running: {"status": "running", "started_at": minutes(1)}, done: {"status": "ok"}})
    before = table(store)
    assert store.unclaim(running) is False
    assert store.unclaim(done) is False
    assert store.unclaim(rid()) is False
    assert table(store) == before


# ---- record ---------------------------------------------------------------------------------


def test_record_writes_a_finished_row_for_a_slot_that_did_not_run(store: Ledger) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert store.record("tick", minutes(1), "missed", "clock-a", "no clock was leading", reason="catch_up") is True
    ((key, got),) = table(store).items()
    assert key == ("tick", minutes(1))
    assert (got.status, got.clock, got.error, got.reason, got.attempt) == (
        "missed", "clock-a", "no clock was leading", "catch_up", 0,
    )  # fmt: skip
    assert got.started_at is None and got.duration_ms is None
    assert got.finished_at is not None and got.finished_at >= before
    assert len(got.run_id) == 32


def test_record_never_overwrites_a_slot_that_already_has_a_row(store: Ledger) -> None:
    claimed = rid()
    store.claim(claimed, "tick", minutes(1), "clock-a")
    assert store.record("tick", minutes(2), "skipped", "clock-a", "coalesced") is True
    before = table(store)
    assert store.record("tick", minutes(1), "missed", "clock-b", "down") is False  # claimed by a run
    assert store.record("tick", minutes(2), "missed", "clock-b", "down") is False  # already recorded
    assert table(store) == before
    assert store.record("tock", minutes(1), "missed", "clock-b", "down") is True  # another job's slot


# ---- reclaim and interrupt ------------------------------------------------------------------


def test_reclaim_takes_over_a_run_once_and_a_stale_view_of_it_loses(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    store.update_runs({run_id: {"status": "running", "attempt": 1, "started_at": T0, "error": "partial"}})
    run = row(store, run_id)
    assert store.reclaim(run, "clock-b") is True
    got = row(store, run_id)
    assert (got.status, got.clock, got.reason, got.error, got.attempt, got.started_at) == (
        "claimed", "clock-b", "retry", None, 1, T0,
    )  # fmt: skip
    assert store.reclaim(run, "clock-c") is False  # the row is no longer what ``run`` saw
    assert store.interrupt(run, "too late") is False
    assert row(store, run_id) == got


def test_reclaim_and_interrupt_refuse_a_run_whose_status_moved_on(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    claimed = row(store, run_id)
    store.update_runs({run_id: {"status": "running", "started_at": T0}})  # its clock started it after all
    assert store.reclaim(claimed, "clock-b") is False
    assert store.interrupt(claimed, "clock-a stopped") is False
    assert row(store, run_id).status == "running"
    assert store.reclaim(dataclasses.replace(claimed, run_id=rid()), "clock-b") is False  # no such row


def test_interrupt_closes_a_run_once(store: Ledger) -> None:
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    before = datetime.now(UTC) - timedelta(seconds=1)
    run = row(store, run_id)
    assert store.interrupt(run, "clock clock-a stopped during the run") is True
    got = row(store, run_id)
    assert (got.status, got.error, got.clock) == ("interrupted", "clock clock-a stopped during the run", "clock-a")
    assert got.finished_at is not None and got.finished_at >= before
    assert store.interrupt(run, "again") is False
    assert store.reclaim(run, "clock-b") is False
    assert row(store, run_id) == got


# ---- unfinished -----------------------------------------------------------------------------


def test_unfinished_lists_claimed_and_running_runs_of_silent_or_unknown_clocks_only(store: Ledger) -> None:
    now = datetime.now(UTC)
    bound = now - timedelta(seconds=20)
    set_heartbeat(store, "live", now)
    set_heartbeat(store, "just-alive", bound)  # exactly at the bound: still alive
    set_heartbeat(store, "silent", bound - timedelta(microseconds=1))
    ids: dict[tuple[str, str], str] = {}
    for n, clock in enumerate(("live", "just-alive", "silent", "never-beat")):
        for m, status in enumerate(("claimed", "running", "ok", "interrupted")):
            run_id = ids[clock, status] = rid()
            store.claim(run_id, "tick", minutes(10 * n + m), clock)
            if status != "claimed":
                store.update_runs({run_id: {"status": status}})
    found = store.unfinished(bound)
    assert sorted(r.run_id for r in found) == sorted(
        ids[clock, status] for clock in ("silent", "never-beat") for status in ("claimed", "running")
    )
    assert {(r.clock, r.status) for r in found} == {
        (clock, status) for clock in ("silent", "never-beat") for status in ("claimed", "running")
    }


def test_a_clock_s_runs_stop_being_unfinished_once_it_beats_again(store: Ledger) -> None:
    now = datetime.now(UTC)
    run_id = rid()
    store.claim(run_id, "tick", T0, "clock-a")
    set_heartbeat(store, "clock-a", now - timedelta(minutes=5))
    assert [r.run_id for r in store.unfinished(now - timedelta(seconds=20))] == [run_id]
    store.heartbeat("clock-a", "standby", now)
    assert store.unfinished(now - timedelta(seconds=20)) == []


# ---- prune ----------------------------------------------------------------------------------


def test_prune_deletes_finished_rows_older_than_the_bound_in_batches_of_the_given_size(store: Ledger) -> None:
    statuses = ["ok", "failed", "missed", "skipped", "interrupted", "timeout"]
    old = [rid() for _ in range(10)]
    store.claim_many([Claim(run_id, "tick", minutes(i), "a") for i, run_id in enumerate(old)])
    store.update_runs({run_id: {"status": statuses[i % len(statuses)]} for i, run_id in enumerate(old)})
    unfinished = [rid(), rid()]
    store.claim_many([Claim(unfinished[0], "tick", minutes(20), "a"), Claim(unfinished[1], "tick", minutes(21), "a")])
    store.update_runs({unfinished[1]: {"status": "running"}})
    recent = rid()
    store.claim(recent, "tick", minutes(100), "a")
    store.update_runs({recent: {"status": "ok"}})
    kept = {r.run_id for r in all_runs(store)} - set(old)

    counts: list[int] = []
    while len(counts) < 10:
        counts.append(store.prune(minutes(30), batch=3))
        if counts[-1] == 0:
            break
    assert counts == [3, 3, 3, 1, 0]
    assert {r.run_id for r in all_runs(store)} == kept == {*unfinished, recent}


def test_prune_of_nothing_old_deletes_nothing(store: Ledger) -> None:
    store.record("tick", minutes(5), "missed", "a", "down")
    assert store.prune(minutes(5), batch=1) == 0  # not older than the bound: kept
    assert store.prune(minutes(5) + timedelta(microseconds=1), batch=1) == 1
    assert all_runs(store) == []


# ---- heartbeats and the leader's round ------------------------------------------------------


def test_leader_round_beats_and_reports_paused_jobs_waiting_requests_and_other_clocks_unfinished_runs(
    store: Ledger,
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)
    controls = Controls(store, known=["tick", "tock"])
    assert store.leader_round("clock-a", started) == (set(), False, False)
    controls.pause("tick", "ops")
    controls.pause("tock", "ops")
    controls.request_run("tick", "ops")
    assert store.claim("mine", "tick", minutes(1), "clock-a")  # its own unfinished run: no housekeeping needed
    assert store.leader_round("clock-a", started) == ({"tick", "tock"}, True, False)
    controls.take_requests("clock-a", {"tick"})
    controls.resume("tock")
    assert store.claim("theirs", "tick", minutes(2), "clock-b")
    assert store.leader_round("clock-a", started) == ({"tick"}, False, True)
    (beat,) = store.clocks()
    assert (beat["clock"], beat["role"], beat["started_at"]) == ("clock-a", "leader", started)
    led = store.led_until()
    assert led is not None and led == beat["heartbeat_at"]


def test_the_leader_round_stores_instants_as_every_other_write_does(store: Ledger) -> None:
    # The round writes through its own statements (state/round.py): its instants must be stored in the same
    # spelling as SQLAlchemy's writes (SQLite compares them as text), a whole second included.
    started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    store.leader_round("clock-a", started)
    store.heartbeat("clock-b", "standby", started)
    with store.engine.connect() as conn:  # what the driver holds: text on SQLite
        rows = conn.exec_driver_sql(f"SELECT clock, started_at FROM {qualified(store.schema, 'clock_clocks')}")
        raw: dict[str, object] = {clock: started for clock, started in rows}
    assert raw["clock-a"] == raw["clock-b"]


def test_a_heartbeat_updates_the_clock_s_row_instead_of_adding_one(store: Ledger) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)
    store.heartbeat("clock-a", "standby", started)
    first = store.clocks()[0]["heartbeat_at"]
    store.heartbeat("clock-a", "leader", started + timedelta(hours=1))  # started_at is the first one's
    (beat,) = store.clocks()
    assert (beat["role"], beat["started_at"]) == ("leader", started)
    assert beat["heartbeat_at"] >= first
