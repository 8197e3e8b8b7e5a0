"""Exactly once with real clock processes, real signals and the real databases.

Every test runs ``python clock.py`` processes (cwd = tmp_path, their own state) whose job appends its
``$CLOCK_SCHEDULED_FOR`` to ticks.txt, then compares three records: the file (what ran), the ledger (what
was decided), and the clocks' logs. Waits are on state (a log line, a line in the file); assertions are
on slots and rows, never on how long the clock took.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dynoclock.config.loader import load_schedule
from dynoclock.daemon.leadership import STANDBY_POLL, Leadership
from dynoclock.observe.logs import EventLog
from dynoclock.run.claims import LEAD
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Run
from dynoclock.state.tables import SCHEMA_VERSION, RunReason, meta
from tests.support.clock import FakeClock
from tests.support.history import finish_run, start_run
from tests.support.logs import parse_ts
from tests.support.postgres import terminate_backends_of
from tests.support.processes import (
    TICK_COMMAND,
    ClockProcess,
    Clocks,
    run_cli,
    slot_floor,
    tick_slots,
    wait_until,
    write_schedule,
)
from tests.support.proxy import Proxy
from tests.support.state import forget_engine, rows_by_slot

SECOND = timedelta(seconds=1)

# How many slots of an ``every: 1s`` job a takeover may leave unrun in ticks.txt (they are recorded
# ``skipped``, coalesced into the catch-up run, never lost):
#   1  the slot the old leader had in flight when it died (claimed, maybe not yet written);
#   ceil(STANDBY_POLL / 1 s)  the standby tries the lease once per STANDBY_POLL, so it may notice the
#      free lease up to that long after the kill or the SIGTERM;
#   1  the catch-up runs the latest slot at or before the takeover instant, not the ones before it;
#   1  headroom for a loaded machine (the standby's poll and the old leader's last claim are not instant).
TAKEOVER_GAP = 1 + math.ceil(STANDBY_POLL) + 1 + 1


def tick_schedule(folder: Path, every: str = "1s") -> Path:
    return write_schedule(folder, f"jobs:\n  tick:\n    every: {every}\n    {TICK_COMMAND}\n")


def wait_ticks_after(folder: Path, moment: datetime, count: int) -> None:
    """Wait until ticks.txt holds ``count`` slots after ``moment``."""
    wait_until(lambda: sum(s > moment for s in tick_slots(folder)) >= count, f"{count} ticks after {moment}")


def slots_in(first: datetime, last: datetime, step: timedelta) -> list[datetime]:
    """The slots of an epoch-anchored ``every: step`` in [first, last]."""
    slot = slot_floor(first, step)
    slot = slot if slot >= first else slot + step
    out = []
    while slot <= last:
        out.append(slot)
        slot += step
    return out


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def just_before_a_slot(step: timedelta, after: datetime, lead: timedelta = timedelta(milliseconds=300)) -> datetime:
    """The first moment at or after ``after`` that lies ``lead`` before a slot of ``every: step``."""
    return slot_floor(after + lead, step) + step - lead


def assert_no_slot_twice(slots: list[datetime]) -> None:
    doubled = sorted(s for s, n in Counter(slots).items() if n > 1)
    assert doubled == [], f"slots run twice: {doubled}"


def clock_name(clock: ClockProcess) -> str:
    return clock.wait_for("clock.start")["clock"]


# ---- takeovers -----------------------------------------------------------------------------


def test_takeovers_run_each_slot_at_most_once_and_leave_none_without_a_row(
    tmp_path: Path, state_db: str, clocks: Clocks
) -> None:
    schedule = tick_schedule(tmp_path)
    a = clocks(schedule)
    a.wait_for("clock.leader")
    b = clocks(schedule)
    b.wait_for("clock.standby")
    a.wait_for("run.ok", count=2)
    killed_at = a.kill()  # kill -9 the leader: no handover, its lease goes with the process
    b.wait_for("clock.leader")
    wait_ticks_after(tmp_path, killed_at, 2)
    c = clocks(schedule)
    c.wait_for("clock.standby")
    termed_at = b.signal(signal.SIGTERM)  # a clean stop: b hands over at once
    c.wait_for("clock.leader")
    wait_ticks_after(tmp_path, termed_at, 2)
    assert b.proc.wait(timeout=40) == 0
    assert c.stop() == 0

    slots = tick_slots(tmp_path)
    assert_no_slot_twice(slots)
    rows = rows_by_slot(Ledger(state_db), "tick")
    window = slots_in(min(slots), max(slots), SECOND)
    assert [s for s in window if s not in rows] == [], "slots with no ledger row"
    dead = clock_name(a)

    def in_flight_when_killed(run: Run) -> bool:
        """The run the killed leader had claimed or started: left claimed/running (interrupted once it is
        found dead), whether or not its command got to write. A slot is claimed LEAD before it is due, so a kill
        in those 250 ms leaves the claim of a slot just after the kill."""
        near = killed_at - 2 * SECOND <= run.scheduled_for <= killed_at + LEAD
        return near and run.clock == dead and run.status in ("claimed", "running", "interrupted")

    ran = set(slots)
    for slot in window:
        run = rows[slot]
        if slot in ran:
            assert run.status == "ok" or in_flight_when_killed(run), run
        else:
            assert run.status in ("skipped", "missed") or in_flight_when_killed(run), run
    assert {s for s, r in rows.items() if r.status == "ok"} <= ran
    assert sum(in_flight_when_killed(r) for r in rows.values()) <= 1

    # Slots not run lie only around the two takeovers, and only a few of them (TAKEOVER_GAP above).
    unrun = [s for s in window if s not in ran]
    for event in (killed_at, termed_at):
        near = [s for s in unrun if event - 2 * SECOND < s <= event + TAKEOVER_GAP * SECOND]
        assert len(near) <= TAKEOVER_GAP, f"{len(near)} slots not run around {event}: {near}"
    elsewhere = [
        s
        for s in unrun
        if not any(event - 2 * SECOND < s <= event + TAKEOVER_GAP * SECOND for event in (killed_at, termed_at))
    ]
    assert elsewhere == []


# ---- restarts -------------------------------------------------------------------------------


def restart_repeatedly(
    clocks: Clocks, schedule: Path, cycles: int, hold: Callable[[ClockProcess, int], None]
) -> tuple[list[ClockProcess], datetime]:
    """Start a clock; then ``cycles`` times: ``hold``, SIGTERM it and start the next one at once (Heroku starts
    the new dyno as it signals the old: they overlap). Returns the clocks and the moment of the final SIGTERM."""
    started = [clocks(schedule)]
    started[0].wait_for("clock.leader")
    for cycle in range(cycles):
        hold(started[-1], cycle)
        started[-1].signal(signal.SIGTERM)
        started.append(clocks(schedule))
        started[-1].wait_for("clock.leader")
    hold(started[-1], cycles)
    stopped_at = started[-1].signal(signal.SIGTERM)
    for clock in started:
        assert clock.proc.wait(timeout=40) == 0, clock.text()
    return started, stopped_at


def assert_every_slot_once(
    folder: Path, state: str, step: timedelta, started: list[ClockProcess], stopped_at: datetime
) -> None:
    """Every slot from the first clock's start to one interval before the final stop has a row (none lost),
    ran at most once, and the slots that ran are exactly the ``ok`` rows."""
    slots = tick_slots(folder)
    assert_no_slot_twice(slots)
    rows = rows_by_slot(Ledger(state), "tick")
    first = parse_ts(started[0].wait_for("clock.start")["ts"])  # the first clock's slots come after this
    window = slots_in(first + timedelta(microseconds=1), stopped_at - step, step)
    assert len(window) >= 2
    assert [s for s in window if s not in rows] == [], "lost slots (no ledger row)"
    assert {s: r.status for s, r in rows.items() if r.status not in ("ok", "skipped")} == {}
    assert {s for s, r in rows.items() if r.status == "ok"} == set(slots)
    for slot in rows:
        assert slot == slot_floor(slot, step), f"{slot} is not on the {step} grid"


def test_a_clock_restarted_again_and_again_neither_doubles_nor_loses_a_slot(
    tmp_path: Path, state_db: str, clocks: Clocks
) -> None:
    cycles = 6

    def hold(clock: ClockProcess, cycle: int) -> None:
        if cycle == cycles:
            clock.wait_for("run.ok", count=2)  # the last clock: two runs, then the final stop
        elif cycle % 3 == 0:
            clock.wait_for("run.ok")  # restart after a run,
        elif cycle % 3 == 1:
            pass  # right after it became leader (its catch-up may still be running),
        else:
            # or just before a slot, so that the slot falls between the two clocks (the new one's catch-up runs it)
            sleep_until(just_before_a_slot(2 * SECOND, datetime.now(UTC), lead=timedelta(milliseconds=100)))

    schedule = tick_schedule(tmp_path, every="2s")
    started, stopped_at = restart_repeatedly(clocks, schedule, cycles=cycles, hold=hold)
    assert_every_slot_once(tmp_path, state_db, 2 * SECOND, started, stopped_at)


@pytest.mark.slow
@pytest.mark.parametrize("state_db", ["postgres"], indirect=True)  # production's store; the fast test covers both
def test_restart_every_20s_for_two_minutes_with_an_every_30s_job(tmp_path: Path, state_db: str, clocks: Clocks) -> None:
    """The issue's own words: restarts never lose or double a slot, even when they come faster than the job."""
    step = 30 * SECOND
    restarts: list[datetime] = []

    def hold(clock: ClockProcess, cycle: int) -> None:
        # Every 20 s; the first one just before a slot, so that every third restart straddles a slot.
        target = restarts[-1] + 20 * SECOND if restarts else just_before_a_slot(step, clock.started + 10 * SECOND)
        sleep_until(target)
        restarts.append(target)

    schedule = tick_schedule(tmp_path, every="30s")
    started, stopped_at = restart_repeatedly(clocks, schedule, cycles=5, hold=hold)  # 6 clocks, 20 s each
    assert_every_slot_once(tmp_path, state_db, step, started, stopped_at)


# ---- catching up after downtime ----------------------------------------------------------------


def test_a_clock_started_after_ten_minutes_down_catches_up_and_records_the_rest_missed(
    tmp_path: Path, store: Ledger, clocks: Clocks
) -> None:
    minute = timedelta(minutes=1)
    now = datetime.now(UTC)
    if now.second >= 55:  # the clock must start in the minute we write its past for: not near its end
        time.sleep(61 - now.second)
    current = slot_floor(datetime.now(UTC), minute)  # M: the latest slot when the clock starts
    stopped = current - 10 * minute
    for job in ("one", "all"):  # the last rows a clock wrote before it stopped, 10 minutes ago
        run_id = f"{job}-before-downtime"
        assert store.claim(run_id, job, stopped, "old-clock")
        start_run(store, run_id, 1, "old-clock")
        finish_run(store, run_id, "ok", None, 5)
    command = "command: [sh, -c, 'echo $CLOCK_JOB $CLOCK_SCHEDULED_FOR >> ticks.txt']"
    schedule = write_schedule(
        tmp_path,
        f"defaults:\n  misfire_grace: 3m\njobs:\n"
        f"  one:\n    every: 1m\n    on_interrupted: retry\n    {command}\n"
        f"  all:\n    every: 1m\n    catch_up: all\n    {command}\n",
    )
    clock = clocks(schedule)
    clock.wait_for("run.ok", count=4, reason="catch_up")  # one for `one`, three for `all`
    assert clock.stop() == 0

    # The catch-up runs are this clock's own, in flight: never taken for a dead clock's runs.
    assert clock.events("run.interrupted") == clock.events("run.reclaimed") == []
    assert clock.events("run.skipped") == []  # catch_up: all runs them one after another, not over each other
    summary = {e["job"]: (e["run"], e["skipped"], e["missed"]) for e in clock.events("clock.catch_up")}
    assert summary == {"one": ("1", "2", "7"), "all": ("3", "0", "7")}
    # M-9m .. M-3m are past misfire_grace=3m: one row, at M-3m, stands for the seven of them.
    missed = current - 3 * minute
    within = [current - 2 * minute, current - minute, current]
    for job, expected in (
        ("one", {missed: "missed", within[0]: "skipped", within[1]: "skipped", within[2]: "ok"}),
        ("all", {missed: "missed", **dict.fromkeys(within, "ok")}),
    ):
        rows = rows_by_slot(store, job)
        got = {slot: run.status for slot, run in rows.items() if stopped < slot <= current}
        assert got == expected, job
        assert rows[missed].error == (
            f"not run within misfire_grace=3m: 7 slots from {stopped + minute:%Y-%m-%dT%H:%M:%SZ} "
            f"to {missed:%Y-%m-%dT%H:%M:%SZ} (this row stands for all)"
        )
        assert rows[stopped].status == "ok"
        assert all(rows[s].reason == "catch_up" for s in within if rows[s].status == "ok")
    ran = sorted((tmp_path / "ticks.txt").read_text().splitlines())
    expected_ran = [f"all {s:%Y-%m-%dT%H:%M:%SZ}" for s in within] + [f"one {current:%Y-%m-%dT%H:%M:%SZ}"]
    assert ran == sorted(expected_ran)


@pytest.mark.parametrize("state_db", ["sqlite"], indirect=True)  # the leader's logic: one backend is enough
def test_a_manual_run_while_a_clock_leads_is_neither_interrupted_nor_run_again(
    tmp_path: Path, state_db: str, clocks: Clocks
) -> None:
    # `run JOB` keeps no heartbeat. The leader closes runs of clocks without a recent heartbeat every
    # LEADER_CHECK (5 s); a manual run lasting longer than that must not look like a dead clock's run.
    schedule = write_schedule(
        tmp_path,
        "jobs:\n  slow:\n    every: 1h\n    on_interrupted: retry\n"
        "    command: [sh, -c, 'echo $CLOCK_RUN_ID >> manual.txt; sleep 6']\n",
    )
    clock = clocks(schedule)
    clock.wait_for("clock.leader")
    done = run_cli("run", "slow", "-c", str(schedule), cwd=tmp_path, state=state_db)
    assert done.returncode == 0, done.stderr
    assert clock.alive()
    assert clock.stop() == 0
    assert clock.events("run.reclaimed") == clock.events("run.interrupted") == []
    (run_id,) = (tmp_path / "manual.txt").read_text().split()  # ran once
    (run,) = Ledger(state_db).history("slow")
    assert (run.run_id, run.status, run.reason) == (run_id, "ok", "manual")


def test_a_clock_on_a_state_database_of_a_newer_schema_says_so_and_never_leads(
    tmp_path: Path, store: Ledger, clocks: Clocks
) -> None:
    with store.engine.begin() as conn:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION + 1)))
    clock = clocks(tick_schedule(tmp_path))
    refused = clock.wait_for("ledger.schema_too_new")
    assert refused["level"] == "error"
    assert (
        refused["error"]
        == f"the state database has schema {SCHEMA_VERSION + 1}, newer than this clock's {SCHEMA_VERSION}"
    )
    assert clock.alive()
    assert clock.stop() == 0
    assert clock.events("clock.leader") == clock.events("run.start") == clock.events("ledger.unreachable") == []
    assert store.history() == []


# ---- runs of dead clocks ------------------------------------------------------------------------


def test_the_leader_closes_runs_of_dead_clocks_but_not_its_own_nor_a_manual_run_within_its_timeout(
    tmp_path: Path, store: Ledger
) -> None:
    schedule = load_schedule(
        str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    timeout: 1m\n    command: ['true']\n"))
    )
    events = EventLog(io.StringIO(), fmt="json")
    clock = FakeClock()
    ledger = Ledger(store.url, clock=clock)
    leadership = Leadership(schedule, ledger, Runner(schedule, events, "me", ledger, clock=clock), events, "me", clock)
    start = clock.now()

    def claim_running(run_id: str, by: str, slot: datetime) -> None:
        reason: RunReason = "manual" if "manual" in by else "schedule"
        assert ledger.claim(run_id, "tick", slot, by, reason=reason)
        start_run(ledger, run_id, 1, by)

    claim_running("manual-long-ago", "host:2#cd:manual", start - timedelta(hours=3))  # its process died
    clock.advance(timedelta(minutes=4, seconds=30))
    claim_running("dead-clock", "gone", start - timedelta(hours=0))  # no heartbeat at all: its clock died
    claim_running("own", "me", start - timedelta(hours=1))  # ours, on our first round: no heartbeat of ours yet
    claim_running("manual-now", "host:1#ab:manual", start - timedelta(hours=2))  # `run tick`: within its timeout
    clock.advance(30)
    leadership.housekeeping.close_dead_runs()  # 5 minutes after the first claim, 30 s after the others
    status = {run.run_id: run.status for run in store.history()}
    assert status == {"dead-clock": "interrupted", "own": "running", "manual-now": "running",
                      "manual-long-ago": "interrupted"}  # fmt: skip


# ---- jobs with no row yet ------------------------------------------------------------------------


def test_a_job_with_no_row_yet_is_caught_up_from_the_last_leader_heartbeat(tmp_path: Path, store: Ledger) -> None:
    # A leader beat 2 minutes ago and stopped; an `at:` job (never a row before its instant) came due
    # 1 minute ago, and a daily job new in this schedule had a slot 3 hours ago, before that heartbeat.
    now = datetime.now(UTC).replace(microsecond=0)
    due = now - timedelta(minutes=1)
    Ledger(store.url, clock=FakeClock(now - timedelta(minutes=2))).heartbeat(
        "old-leader", "leader", now - timedelta(hours=1)
    )
    path = write_schedule(
        tmp_path,
        f"jobs:\n  once:\n    at: '{due:%Y-%m-%dT%H:%M:%SZ}'\n    command: [sh, -c, 'echo once >> {tmp_path}/ticks']\n"
        f"  daily:\n    every: 1d\n    anchor: '{now - timedelta(hours=3):%Y-%m-%dT%H:%M:%SZ}'\n"
        f"    command: [sh, -c, 'echo daily >> {tmp_path}/ticks']\n",
    )
    schedule = load_schedule(str(path))
    events = EventLog(io.StringIO(), fmt="json")
    runner = Runner(schedule, events, "me", store)
    leadership = Leadership(schedule, store, runner, events, "me")
    assert leadership.lease.try_acquire()  # catch-up is a leader's, and its claims are fenced by the lease
    leadership.catch_up(now, store.led_until())
    wait_until(lambda: [r for r in store.history("once") if r.status not in ("claimed", "running")], "the run")
    (once,) = store.history("once")
    assert (once.scheduled_for, once.status, once.reason) == (due, "ok", "catch_up")
    assert (tmp_path / "ticks").read_text().split() == ["once"]
    assert store.history("daily") == []  # its slots before the last heartbeat were never its to run
    leadership.lease.release()


@pytest.mark.parametrize("state_db", ["sqlite"], indirect=True)  # the leader's logic: one backend is enough
def test_an_at_job_due_while_the_clock_restarts_runs_once(tmp_path: Path, state_db: str, clocks: Clocks) -> None:
    due = datetime.now(UTC).replace(microsecond=0) + 4 * SECOND
    schedule = write_schedule(tmp_path, f"jobs:\n  once:\n    at: '{due:%Y-%m-%dT%H:%M:%SZ}'\n    {TICK_COMMAND}\n")
    first = clocks(schedule)
    first.wait_for("clock.leader")
    assert first.stop() == 0  # a deploy: the old clock stops before the job is due (unless this machine is
    sleep_until(due + SECOND)  # very slow: then the old clock ran it, and it must still run only once)
    second = clocks(schedule)  # ... and the new one starts after it: its catch-up runs the job
    second.wait_for("clock.leader")
    ledger = Ledger(state_db)
    wait_until(lambda: [r for r in ledger.history("once") if r.status not in ("claimed", "running")], "the run")
    assert second.stop() == 0
    assert tick_slots(tmp_path) == [due]
    (run,) = ledger.history("once")
    assert (run.scheduled_for, run.status) == (due, "ok")


# ---- database trouble ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_clock_survives_its_database_connections_being_killed(
    tmp_path: Path, pg_schema_url: str, pg_clocks: Clocks
) -> None:
    clock = pg_clocks(tick_schedule(tmp_path))
    clock.wait_for("run.ok", count=2)
    terminated = 0
    trouble_ends = time.monotonic() + 8
    while time.monotonic() < trouble_ends:  # the lease's connection and the pooled ones, again and again
        terminated += terminate_backends_of(clock.scheduler_pid())  # the process with the connections
        time.sleep(0.1)
    trouble_over = datetime.now(UTC)
    assert terminated > 0
    wait_ticks_after(tmp_path, trouble_over, 3)  # slots after the trouble run again
    assert clock.alive()
    assert clock.stop() == 0
    slots = tick_slots(tmp_path)
    assert_no_slot_twice(slots)
    rows = rows_by_slot(Ledger(pg_schema_url), "tick")
    # An outcome write that dies with its connection is kept and written again: every slot that ran says ok.
    assert all(rows[s].status == "ok" for s in slots), {s: rows[s].status for s in slots if rows[s].status != "ok"}
    # A slot that fell while the clock was not leading is coalesced by the catch-up when it leads again: it has
    # a row saying so. Every slot from the last time it took the lease on ran.
    led_again = max(parse_ts(e["ts"]) for e in clock.events("clock.leader"))
    after = slots_in(trouble_over + SECOND, max(slots), SECOND)
    assert after and all(s in rows for s in after), [s for s in after if s not in rows]
    not_run = {s: (rows[s].status, rows[s].reason) for s in after if s not in set(slots)}
    assert all(v[0] in ("skipped", "missed") and s < led_again for s, v in not_run.items()), (led_again, not_run)
    assert all(s in set(slots) for s in after if s > led_again)


@pytest.mark.postgres
@pytest.mark.parametrize("dies", [0, 1], ids=["led_until-read", "first-heartbeat"])
def test_a_takeover_whose_round_fails_after_taking_the_lease_still_catches_up(
    tmp_path: Path, pg_schema_url: str, pg_admin: sa.Engine, dies: int
) -> None:
    # The clock loses its lease (its connections killed), two slots pass with no leader, then it takes the lease
    # back on a round whose next database call fails (a pooled connection killed too). Whichever call it is, the
    # slots that passed are caught up: by that round, or by the next one. (The takeover used to set the leader
    # flag first and catch up last: a failure in between left the clock leading with the gap never looked at.)
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1m\n    command: ['true']\n")))
    clock = FakeClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    events = EventLog(io.StringIO(), fmt="json")
    ledger = Ledger(pg_schema_url, clock=clock)
    leadership = Leadership(schedule, ledger, Runner(schedule, events, "me", ledger, clock=clock), events, "me", clock)
    leadership.step()
    assert leadership.is_leader()
    first = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    clock.set(first)
    assert ledger.claim("r1", "tick", first, "me", fence=leadership.lease.fence())  # run by the leader
    finish_run(ledger, "r1", "ok", None, 10)
    terminate_backends_of(os.getpid())
    clock.advance(5)
    leadership.step()  # the lease's connection is gone: no longer leads
    assert not leadership.is_leader()
    clock.set(first + timedelta(minutes=2, seconds=30))  # 00:02 and 00:03 pass with no leader
    with ledger.engine.connect() as one, ledger.engine.connect() as two:  # two pooled connections, used in turn
        pids = [c.connection.dbapi_connection.info.backend_pid for c in (one, two)]  # type: ignore[union-attr]
    with pg_admin.connect() as admin:
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[dies]})
    leadership.step()  # takes the lease back; one of its database calls fails
    clock.advance(5)
    leadership.step()
    assert leadership.is_leader()
    wanted = {first + timedelta(minutes=1): "skipped", first + timedelta(minutes=2): "ok"}
    wait_until(
        lambda: {s: r.status for s, r in rows_by_slot(ledger, "tick").items() if s in wanted} == wanted,
        "the slots that passed with no leader caught up",
        details=lambda: str({s: (r.status, r.reason) for s, r in rows_by_slot(ledger, "tick").items()}),
    )
    leadership.step_down()


class WaitingMovesTime(FakeClock):
    """A fake clock whose waits pass at once, moving time by their timeout (as the real wait would have)."""

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        if not event.is_set() and timeout is not None:
            self.advance(timeout)
        return event.is_set()


def test_a_claim_that_cannot_reach_the_database_gives_up_past_misfire_grace_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    path = write_schedule(
        tmp_path, f"jobs:\n  touch:\n    every: 1h\n    misfire_grace: 1s\n    command: [touch, '{marker}']\n"
    )
    schedule = load_schedule(str(path))
    stream = io.StringIO()
    unreachable = "postgresql://postgres@127.0.0.1:1/x"
    # Time moves only by the retries' own waits, so the first failure always falls inside the grace (with the
    # real time, a slow first connect could use the whole second up) and the test never depends on speed.
    clock = WaitingMovesTime(datetime(2026, 1, 1, 2, 0, tzinfo=UTC))
    runner = Runner(schedule, EventLog(stream, fmt="json"), "test", Ledger(unreachable), clock=clock)
    try:
        outcome = runner.execute(schedule.jobs["touch"], clock.now(), retries=False)
    finally:
        runner.stopping.set()
        forget_engine(unreachable)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    names = [e["event"] for e in events]
    assert outcome.status == "missed"
    assert names.count("run.missed") == 1
    assert names[-1] == "run.missed"
    assert names[:-1] and set(names[:-1]) == {"ledger.unreachable"}
    assert [e["retry_in_s"] for e in events[:-1]] == [0.5, 1.0]  # doubling, and given up at 1.5 s past the slot
    assert "misfire_grace=1s" in events[-1]["error"]
    assert "run.start" not in names
    assert not marker.exists()


# ---- the start log ---------------------------------------------------------------------------------


def test_dyno_with_sqlite_state_warns_at_start(tmp_path: Path, state_db: str, clocks: Clocks) -> None:
    clock = clocks(tick_schedule(tmp_path, every="1h"), env={"DYNO": "clock.1"})
    clock.wait_for("clock.leader")
    assert clock.stop() == 0
    warnings = clock.events("clock.warning")
    if state_db.startswith("sqlite"):
        assert len(warnings) == 1
        assert "SQLite" in warnings[0]["note"]
        assert warnings[0]["level"] == "warning"
        assert clock.events()[0]["event"] == "clock.warning"  # before anything else
    else:
        assert warnings == []
    assert clock_name(clock).startswith("clock.1#")


@pytest.mark.postgres
def test_a_leader_whose_database_goes_silent_stops_claiming_and_a_standby_takes_over(
    tmp_path: Path, pg_schema_url: str, pg_clocks: Clocks
) -> None:
    # Packets to the database stop, the sockets stay open (a half-open connection, a frozen proxy): every call of
    # the leader waits, none fails. Its lease expires in the database, the standby takes over, and the old leader
    # stops claiming on its own and says so (with a session advisory lock the old leader held the lease for as
    # long as the server kept its connection: no clock led, every slot was lost).
    upstream = make_url(pg_schema_url)
    proxy = Proxy(upstream.host or "127.0.0.1", upstream.port or 5432).start()
    via_proxy = upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    schedule = tick_schedule(tmp_path)
    silent = pg_clocks.start("-c", str(schedule), env={"CLOCK_DATABASE_URL": via_proxy}, name="silent")
    silent.wait_for("clock.leader")
    silent.wait_for("run.ok", count=2)
    standby = pg_clocks(schedule)
    standby.wait_for("clock.standby")
    proxy.freeze()
    frozen_at = datetime.now(UTC)
    standby.wait_for("clock.leader", timeout=60)
    lost = silent.wait_for("clock.lease_lost", timeout=60)
    assert "not renewed" in lost["note"]
    wait_ticks_after(tmp_path, frozen_at + 20 * SECOND, 3)  # the new leader runs the slots
    assert standby.stop() == 0
    silent.kill()
    assert_no_slot_twice(tick_slots(tmp_path))
