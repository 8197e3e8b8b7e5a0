"""Catch-up at its edges, with real clock processes on both stores: a SIGTERM in the middle of a
``catch_up: all`` chain, claims that wait out a state-database outage, and a gap of days.

Each test seeds or breaks the real ledger, runs ``python clock.py`` (cwd = tmp_path) whose job appends its
``$CLOCK_SCHEDULED_FOR`` to ticks.txt, and then checks the ledger slot by slot: every slot ran once or has a
row saying why not. Waits are on log lines and rows, never on how long the clock took.
"""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dynoclock.config.loader import load_schedule
from dynoclock.daemon.leadership import Leadership
from dynoclock.observe.logs import EventLog
from dynoclock.observe.timefmt import iso_utc
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import Ledger
from tests.support.clock import FakeClock
from tests.support.history import finish_run, start_run
from tests.support.logs import parse_ts
from tests.support.processes import Clocks, slot_floor, tick_slots, wait_until, write_schedule
from tests.support.state import rows_by_slot

SECOND = timedelta(seconds=1)
SLOW_TICK = "command: [sh, -c, 'echo $CLOCK_SCHEDULED_FOR >> ticks.txt; sleep {sleep}']"


def seed_row(store: Ledger, job: str, slot: datetime) -> None:
    """The last row a clock wrote before it stopped: claimed, started and finished ok."""
    run_id = f"{job}-seed"
    assert store.claim(run_id, job, slot, "old-clock")
    start_run(store, run_id, 1, "old-clock")
    finish_run(store, run_id, "ok", None, 5)


def over(store: Ledger, job: str, slots: list[datetime]) -> bool:
    """Every one of ``slots`` has a row that is no longer claimed or running."""
    rows = rows_by_slot(store, job)
    return all(slot in rows and rows[slot].status not in ("claimed", "running") for slot in slots)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def grid(first: datetime, last: datetime) -> list[datetime]:
    """Every whole second from ``first`` to ``last``."""
    return grid_every(first, last, SECOND)


def grid_every(first: datetime, last: datetime, step: timedelta) -> list[datetime]:
    """``first``, ``first + step``, ... up to ``last``."""
    return [first + n * step for n in range(int((last - first) / step) + 1)]


# ---- a SIGTERM in the middle of a catch_up: all chain --------------------------------------------


def test_a_sigterm_during_a_catch_up_all_chain_hands_the_rest_to_the_next_leader(
    tmp_path: Path, store: Ledger, clocks: Clocks
) -> None:
    now = datetime.now(UTC)
    seeded = slot_floor(now, SECOND) - 40 * SECOND  # the last row: 40 slots to catch up, 0.3 s each
    seed_row(store, "tick", seeded)
    schedule = write_schedule(
        tmp_path,
        f"jobs:\n  tick:\n    every: 1s\n    catch_up: all\n    misfire_grace: 3m\n"
        f"    {SLOW_TICK.format(sleep='0.3')}\n",
    )
    a = clocks(schedule)
    a.wait_for("run.ok", count=5, reason="catch_up")
    b = clocks(schedule)
    b.wait_for("clock.standby")
    a.signal(signal.SIGTERM)  # the chain has some 30 slots left
    assert a.wait() == 0
    b.wait_for("clock.leader")
    chain = grid(seeded + SECOND, seeded + int(a.wait_for("clock.catch_up")["run"]) * SECOND)
    b_caught_up_to = slot_floor(parse_ts(b.wait_for("clock.catch_up")["ts"]), SECOND)
    wait_until(lambda: over(store, "tick", grid(chain[0], b_caught_up_to)), "b's catch-up run", timeout=60)
    stopped_at = b.signal(signal.SIGTERM)
    assert b.wait() == 0

    ran = tick_slots(tmp_path)
    assert sorted(set(ran)) == sorted(ran), "a slot ran twice"
    rows = rows_by_slot(store, "tick")
    # Every slot of the chain ran, in order: the ones a did not reach ran on b, which found the gap.
    assert [s for s in chain if s not in rows] == [], "slots of the chain with no row"
    assert {s: rows[s].status for s in chain if rows[s].status != "ok"} == {}
    assert [s for s in ran if s in set(chain)] == chain
    assert {rows[s].clock for s in chain} == {clock.wait_for("clock.start")["clock"] for clock in (a, b)}
    handed = a.wait_for("clock.handed_over", job="tick")  # a said what it left, and to whom
    assert int(handed["slots"]) == sum(rows[s].clock == b.wait_for("clock.start")["clock"] for s in chain)
    # And every later slot, up to b's stop, ran or says why not.
    after = grid(chain[-1] + SECOND, slot_floor(stopped_at, SECOND) - SECOND)
    assert [s for s in after if s not in rows] == [], "slots with no row"
    assert {rows[s].status for s in after} <= {"ok", "skipped"}


# ---- claims that wait out a database outage -------------------------------------------------------


@contextmanager
def inserts_refused(store: Ledger) -> Iterator[None]:
    """The runs table refuses every new row as a full disk would (a trigger raising the database's own
    disk-full error), while the clock's other writes, heartbeats and lease included, still go through."""
    with store.engine.begin() as conn:
        if store.is_postgres:
            conn.execute(sa.text(
                "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$"
            ))  # fmt: skip
            conn.execute(sa.text(
                "CREATE TRIGGER disk_full BEFORE INSERT ON clock_runs FOR EACH ROW EXECUTE FUNCTION disk_full()"
            ))  # fmt: skip
        else:
            conn.execute(sa.text(
                "CREATE TRIGGER disk_full BEFORE INSERT ON clock_runs "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            ))  # fmt: skip
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER disk_full" + (" ON clock_runs" if store.is_postgres else "")))


@pytest.mark.parametrize("catch_up", ["all", "one"])
def test_slots_claimed_after_a_database_outage_run_in_order_not_over_each_other(
    tmp_path: Path, store: Ledger, clocks: Clocks, catch_up: str
) -> None:
    schedule = write_schedule(
        tmp_path, f"jobs:\n  tick:\n    every: 1s\n    catch_up: {catch_up}\n    {SLOW_TICK.format(sleep='0.8')}\n"
    )
    clock = clocks(schedule)
    clock.wait_for("run.ok", count=2)
    with inserts_refused(store):
        first = parse_ts(clock.wait_for("ledger.unreachable")["scheduled_for"])  # the first claim refused
        sleep_until(first + 7.5 * SECOND)  # eight slots come due while the disk is full
    outage = grid(first, first + 7 * SECOND)
    wait_until(lambda: over(store, "tick", outage), "the outage's slots claimed and run", timeout=90)
    assert clock.stop() == 0
    rows = rows_by_slot(store, "tick")
    not_run = {s: (rows[s].status, rows[s].error) for s in outage if rows[s].status != "ok"}
    ran = [s for s in tick_slots(tmp_path) if s in set(outage)]
    assert ran == sorted(ran)  # one after another, oldest first
    if catch_up == "all":
        assert not_run == {}
        assert ran == outage
    else:  # the first one's claim was waiting; of those waiting behind it, the newest runs
        assert set(not_run.values()) == {("skipped", "catch_up=one: coalesced into a later run")}
        assert ran[0] == first
        assert len(ran) == len(outage) - len(not_run)


# ---- a gap of days -----------------------------------------------------------------------------------


def test_a_gap_of_three_days_runs_within_grace_and_records_the_rest_in_one_row(
    tmp_path: Path, store: Ledger, clocks: Clocks
) -> None:
    seeded = slot_floor(datetime.now(UTC), SECOND) - timedelta(days=3)
    seed_row(store, "tick", seeded)
    schedule = write_schedule(
        tmp_path, f"jobs:\n  tick:\n    every: 1s\n    misfire_grace: 20s\n    {SLOW_TICK.format(sleep='0')}\n"
    )
    clock = clocks(schedule)
    caught = clock.wait_for("clock.catch_up", job="tick")
    clock.wait_for("run.ok", reason="catch_up")
    # The catch-up covers the slots up to the instant the clock started from; those after it are the scheduler's,
    # fired late once the first round is done (planning three days of slots took over a second in CI), and a
    # clock stopped before it claimed them leaves them to the next leader. A scheduled run, and they are claimed.
    wait_until(lambda: any("reason" not in run for run in clock.events("run.ok")), "a scheduled run")
    assert clock.stop() == 0
    began = parse_ts(caught["ts"])  # the catch-up looked at slots up to about here

    rows = rows_by_slot(store, "tick")
    (summary,) = [run for run in rows.values() if run.status == "missed"]
    first, last = seeded + SECOND, summary.scheduled_for
    count = int((last - first) / SECOND) + 1
    assert began - timedelta(seconds=25) < last < began - timedelta(seconds=19)  # the grace is 20 s
    assert summary.error is not None
    assert f"{count:,} slots from {iso_utc(first)} to {iso_utc(last)}" in summary.error
    assert "misfire_grace=20s" in summary.error
    assert int(caught["missed"]) == count
    # Within the grace: the latest slot ran (catch_up: one), the others before it say skipped; none left out.
    window = grid(last + SECOND, slot_floor(began, SECOND) - SECOND)
    assert [s for s in window if s not in rows] == [], "slots within misfire_grace with no row"
    assert {rows[s].status for s in window} <= {"ok", "skipped"}
    assert [s for s in rows if seeded < s < last] == []  # one row for the whole gap, not one per slot


# ---- a hand-over racing a takeover -------------------------------------------------------------------


def test_a_claim_handed_over_as_the_clock_takes_the_lease_back_runs_and_is_not_given_back(
    tmp_path: Path, store: Ledger
) -> None:
    # A batch claim committed, its answer lost: the slot waits in the backlog under the batch's run id. The backlog
    # looks at leadership: lost. Just then the clock takes the lease back, and its catch-up reads the ledger, where
    # the slot has its row (claimed): nothing to plan. Giving the claim back now would leave the slot with no row
    # at all; it is the clock's again, and runs, once.
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    command: ['true']\n")))
    stream = io.StringIO()
    looks: list[bool] = []

    def is_leader() -> bool:
        if not looks:  # the first look says lost, and the takeover comes right after it
            runner.takeovers += 1
        looks.append(len(looks) > 0)
        return looks[-1]

    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", store, is_leader=is_leader)
    slot = datetime.now(UTC).replace(microsecond=0)
    assert store.claim("batch-1", "tick", slot, "me")
    try:
        runner.submit_in_order("tick", [slot], "schedule", ["batch-1"])
        wait_until(lambda: over(store, "tick", [slot]) or "clock.handed_over" in stream.getvalue(), "the run")
    finally:
        runner.stopping.set()
    assert "clock.handed_over" not in stream.getvalue()
    (run,) = store.history("tick")
    assert (run.run_id, run.status) == ("batch-1", "ok")
    assert looks[0] is False


# ---- a successor that comes too late ------------------------------------------------------------------


def test_slots_handed_over_and_taken_by_no_one_within_grace_are_recorded_missed(tmp_path: Path, store: Ledger) -> None:
    # A leader stopped 2 minutes ago in the middle of a chain: 12:57:40 and 12:57:50 (as it were) have no row,
    # the slots around them do. No clock led since; this one comes after their misfire_grace (1 minute).
    now = slot_floor(datetime.now(UTC), 10 * SECOND)
    ten = 10 * SECOND
    Ledger(store.url, clock=FakeClock(now - 120 * SECOND)).heartbeat("old-leader", "leader", now - timedelta(hours=1))
    gap = [now - 140 * SECOND, now - 130 * SECOND]
    for n, slot in enumerate(grid_every(now - 160 * SECOND, now - 120 * SECOND, ten)):
        if slot not in gap:
            assert store.claim(f"old-{n}", "tick", slot, "old-leader")
            start_run(store, f"old-{n}", 1, "old-leader")
            finish_run(store, f"old-{n}", "ok", None, 5)
    path = write_schedule(tmp_path, "jobs:\n  tick:\n    every: 10s\n    misfire_grace: 1m\n    command: ['true']\n")
    schedule = load_schedule(str(path))
    events = EventLog(io.StringIO(), fmt="json")
    runner = Runner(schedule, events, "me", store)
    try:
        leadership = Leadership(schedule, store, runner, events, "me")
        assert leadership.lease.try_acquire()  # catch-up is a leader's, and its claims are fenced by the lease
        leadership.catch_up(now, store.led_until())
        wait_until(lambda: over(store, "tick", [now]), "the catch-up run")
    finally:
        runner.stopping.set()
    rows = rows_by_slot(store, "tick")
    (missed,) = [run for run in rows.values() if run.status == "missed"]
    # One row for the two handed-over slots and the five after the old leader's last one, all past the grace.
    assert missed.scheduled_for == now - 70 * SECOND
    assert missed.error == (
        f"not run within misfire_grace=1m: 7 slots from {iso_utc(gap[0])} to {iso_utc(now - 70 * SECOND)}"
        " (this row stands for all)"
    )
    window = grid_every(now - 60 * SECOND, now, ten)
    assert {slot: rows[slot].status for slot in window} == {**dict.fromkeys(window[:-1], "skipped"), now: "ok"}
