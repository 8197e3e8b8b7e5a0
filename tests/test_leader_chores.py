"""The leader's chores driven by a fake clock through public methods: housekeeping's cadence, pruning, pauses
and "run now" taken on a round, a single claim retried while the database is away, and `run JOB`'s outcome."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dynoclock.config.loader import Schedule, load_schedule
from dynoclock.daemon.housekeeping import HOUSEKEEPING_EVERY, PRUNE_EVERY
from dynoclock.daemon.leadership import LEADER_CHECK, PROMPT_TRIES, SHARED_SWITCH, STANDBY_POLL, Leadership
from dynoclock.observe.logs import EventLog
from dynoclock.run.claims import Claims
from dynoclock.run.outcome import RunFields
from dynoclock.run.runner import Runner
from dynoclock.state.controls import Controls
from dynoclock.state.ledger import Ledger
from dynoclock.state.writer import RunWriter
from tests.support.clock import FakeClock
from tests.support.history import finish_run, start_run
from tests.support.processes import wait_until, write_schedule


def events_of(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, stream.getvalue().splitlines()) if e["event"] == name]


def chores(tmp_path: Path, store: Ledger, text: str) -> tuple[Leadership, FakeClock, Ledger, io.StringIO, Schedule]:
    schedule = load_schedule(str(write_schedule(tmp_path, text)))
    stream = io.StringIO()
    events = EventLog(stream, fmt="json")
    clock = FakeClock()
    ledger = Ledger(store.url, clock=clock)
    runner = Runner(schedule, events, "me", ledger, clock=clock)
    return Leadership(schedule, ledger, runner, events, "me", clock), clock, ledger, stream, schedule


TICK = "jobs:\n  tick:\n    every: 1h\n    timeout: 1m\n    command: ['true']\n"


def running_row(ledger: Ledger, run_id: str, hours_ago: int, clock: str = "gone") -> None:
    assert ledger.claim(run_id, "tick", ledger.clock.now() - timedelta(hours=hours_ago), clock)
    start_run(ledger, run_id, 1, clock)


def test_housekeeping_closes_dead_clocks_runs_at_most_once_every_fourteen_seconds_of_the_clock(
    tmp_path: Path, store: Ledger
) -> None:
    leadership, clock, ledger, stream, _ = chores(tmp_path, store, TICK)
    ledger.heartbeat("x", "standby", clock.now())
    running_row(ledger, "a", 1, clock="x")
    clock.advance(10)
    ledger.heartbeat("y", "standby", clock.now())
    running_row(ledger, "b", 2, clock="y")
    clock.advance(11)  # clock x's last heartbeat is 21 s old: dead (DEAD_AFTER is 20 s); y's is 11 s old
    leadership.housekeeping.round()
    assert {run.run_id: run.status for run in store.history()} == {"a": "interrupted", "b": "running"}
    clock.advance(HOUSEKEEPING_EVERY - 1)  # y is dead now, but the last round was 13 s ago
    leadership.housekeeping.round()
    assert {run.run_id: run.status for run in store.history()} == {"a": "interrupted", "b": "running"}
    clock.advance(1)
    leadership.housekeeping.round()
    assert {run.run_id: run.status for run in store.history()} == {"a": "interrupted", "b": "interrupted"}
    assert [e["run_id"] for e in events_of(stream, "run.interrupted")] == ["a", "b"]


def test_a_dead_clocks_claim_that_never_started_runs_once_within_misfire_grace_and_is_missed_after_it(
    tmp_path: Path, store: Ledger
) -> None:
    # The clock died in the moment between claiming its slots and starting them (they are claimed LEAD ahead,
    # and a jittered run waits after its claim): those runs were not interrupted, they never happened.
    text = "jobs:\n  tick:\n    every: 1h\n    misfire_grace: 1m\n    command: ['true']\n"
    leadership, clock, ledger, stream, _ = chores(tmp_path, store, text)
    ledger.heartbeat("dead", "leader", clock.now())
    assert ledger.claim("recent", "tick", clock.now() - timedelta(seconds=10), "dead")
    assert ledger.claim("old", "tick", clock.now() - timedelta(hours=2), "dead")
    clock.advance(21)  # its last heartbeat is 21 s old: dead
    leadership.housekeeping.close_dead_runs()
    wait_until(lambda: [r for r in store.history() if r.run_id == "recent" and r.status == "ok"], "the run")
    leadership.housekeeping.close_dead_runs()  # a later round takes nothing twice
    runs = {run.run_id: run for run in store.history()}
    assert (runs["recent"].status, runs["recent"].attempt, runs["recent"].reason, runs["recent"].clock) == (
        "ok",
        1,
        "schedule",
        "me",
    )
    assert (runs["old"].status, runs["old"].error) == (
        "missed",
        "clock dead stopped before the run started; past misfire_grace=1m",
    )
    assert [e["run_id"] for e in events_of(stream, "run.reclaimed")] == ["recent"]
    assert [e["run_id"] for e in events_of(stream, "run.start")] == ["recent"]
    assert events_of(stream, "run.interrupted") == []


def test_prune_deletes_history_older_than_history_keep_in_batches_and_keeps_unfinished_rows(
    tmp_path: Path, store: Ledger
) -> None:
    leadership, clock, ledger, stream, _ = chores(tmp_path, store, "history_keep: 1d\n" + TICK)
    start = clock.now()
    for n in range(1_100):  # three batches of at most 500
        run_id = f"old-{n}"
        assert ledger.claim(run_id, "tick", start - timedelta(days=3, minutes=n), "gone")
        finish_run(ledger, run_id, "ok", None, 5)
    running_row(ledger, "old-but-running", 24 * 5)
    assert ledger.claim("recent", "tick", start - timedelta(hours=3), "me")
    finish_run(ledger, "recent", "ok", None, 5)
    assert leadership.housekeeping.prune() == 1_100
    assert sorted(run.run_id for run in store.history(limit=2_000)) == ["old-but-running", "recent"]
    (pruned,) = events_of(stream, "ledger.pruned")
    assert pruned["rows"] == 1_100


def test_the_first_round_starts_a_prune_and_the_next_only_after_an_hour(tmp_path: Path, store: Ledger) -> None:
    leadership, clock, ledger, stream, _ = chores(tmp_path, store, "history_keep: 1d\n" + TICK)

    def old_row(run_id: str) -> None:
        assert ledger.claim(run_id, "tick", clock.now() - timedelta(days=2), "gone")
        finish_run(ledger, run_id, "ok", None, 5)

    old_row("a")
    leadership.housekeeping.round()
    wait_until(lambda: events_of(stream, "ledger.pruned"), "the first prune")
    old_row("b")
    clock.advance(HOUSEKEEPING_EVERY)
    leadership.housekeeping.round()  # a round, but not an hour after the last prune
    clock.advance(PRUNE_EVERY)
    old_row("c")
    leadership.housekeeping.round()
    wait_until(lambda: len(events_of(stream, "ledger.pruned")) == 2, "the second prune")
    assert [e["rows"] for e in events_of(stream, "ledger.pruned")] == [1, 2]
    assert store.history() == []


def test_a_leader_round_applies_pauses_and_takes_run_now_requests(tmp_path: Path, store: Ledger) -> None:
    leadership, clock, ledger, stream, _ = chores(tmp_path, store, TICK)
    leadership.step()
    assert leadership.is_leader()
    controls = Controls(ledger, known=["tick"])
    controls.pause("tick", by="test")
    controls.request_run("tick", by="test")
    clock.advance(5)
    leadership.step()
    assert leadership.runner.paused == {"tick"}
    (taken,) = events_of(stream, "request.taken")
    assert taken["job"] == "tick"
    wait_until(lambda: [r for r in store.history("tick") if r.status == "ok"], "the manual run")
    (run,) = store.history("tick")
    assert (run.reason, run.status) == ("manual", "ok")  # a manual run is not paused
    assert controls.pending_requests() == []
    controls.resume("tick")
    leadership.step()
    assert leadership.runner.paused == set()
    leadership.step_down()


def test_a_run_now_request_for_a_job_the_leader_does_not_know_waits_for_a_clock_that_does(
    tmp_path: Path, store: Ledger
) -> None:
    # A deploy adds job "new"; the old clock still leads for a while, then the new one takes over.
    old, clock, ledger, old_stream, _ = chores(tmp_path, store, TICK)
    old.step()
    assert old.is_leader()
    Controls(ledger, known=["new"]).request_run("new", by="test")
    clock.advance(5)
    old.step()
    assert events_of(old_stream, "request.taken") == []
    assert [r["job"] for r in Controls(ledger).pending_requests()] == ["new"]  # kept, not dropped
    old.step_down()
    (tmp_path / "new").mkdir()
    new, _, _, new_stream, _ = chores(tmp_path / "new", store, TICK + "  new:\n    every: 1h\n    command: ['true']\n")
    new.step()
    assert new.is_leader()
    (taken,) = events_of(new_stream, "request.taken")
    assert taken["job"] == "new"
    wait_until(lambda: [r for r in store.history("new") if r.status == "ok"], "the requested run")
    assert Controls(ledger).pending_requests() == []
    new.step_down()


def test_a_claim_retried_while_the_database_is_away_is_recorded_missed_once_its_grace_ends(tmp_path: Path) -> None:
    schedule = load_schedule(str(write_schedule(tmp_path, TICK.replace("timeout: 1m", "misfire_grace: 10s"))))
    stream = io.StringIO()
    events = EventLog(stream, fmt="json")
    clock = FakeClock()
    away = Ledger("postgresql://nobody@127.0.0.1:9/none", clock=clock)  # nothing listens on port 9
    claims = Claims(away, RunWriter(away, events, clock, "me"), events, clock, "me", threading.Event())
    slot = clock.now()
    fields: RunFields = {"job": "tick", "run_id": "r1", "scheduled_for": slot}
    result: list[str] = []
    job = schedule.jobs["tick"]
    threading.Thread(target=lambda: result.append(claims.one(job, slot, "r1", "schedule", fields))).start()
    backoff = [0.5, 1.0, 2.0, 4.0, 8.0]  # doubling: tries at 0, 0.5, 1.5, 3.5, 7.5 and 15.5 s after the slot
    for n, wait in enumerate(backoff, start=1):
        wait_until(lambda tries=n: len(events_of(stream, "ledger.unreachable")) == tries, f"try {n}")  # type: ignore[misc]
        assert result == []  # still trying: the slot's misfire_grace (10 s) has not ended
        clock.advance(wait)
    wait_until(lambda: result, "the claim to give up")
    assert result == ["gave_up"]
    assert [e["retry_in_s"] for e in events_of(stream, "ledger.unreachable")] == backoff
    (missed,) = events_of(stream, "run.missed")
    assert (missed["run_id"], missed["error"]) == ("r1", "database unreachable until past misfire_grace=10s")


def test_run_job_reports_its_own_runs_outcome_when_another_run_is_written_off_first(tmp_path: Path) -> None:
    stuck = "    python: tests.jobs_for_tests:block_in_c\n    args: [8]\n"
    schedule = load_schedule(str(write_schedule(tmp_path, (
        f"jobs:\n  other:\n    every: 1h\n    timeout: 1s\n{stuck}  mine:\n    every: 1h\n    timeout: 2s\n{stuck}"
    ))))  # fmt: skip
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"))
    runner.submit("other", runner.clock.now())  # written off about 1 s before "mine" is
    outcome = runner.run_foreground(schedule.jobs["mine"])
    assert (outcome.status, outcome.error) == ("timeout", "timeout=2s exceeded")
    abandoned = [e["job"] for e in events_of(stream, "run.abandoned")]
    assert abandoned == ["other", "mine"]


class DropsOnce(Ledger):
    """A ledger whose connection is lost once, in the middle of a takeover's catch-up (where a killed server
    process or a dropped link can land; tests/test_exactly_once.py kills connections for real, at random points)."""

    dropped = False

    def catch_up_slots_of(
        self, since: dict[str, datetime], until: datetime
    ) -> dict[str, tuple[datetime | None, list[datetime]]]:
        if not self.dropped:
            self.dropped = True
            raise sa.exc.OperationalError("SELECT ...", None, Exception("server closed the connection unexpectedly"))
        return super().catch_up_slots_of(since, until)


def test_a_takeover_whose_catch_up_fails_owes_it_and_catches_up_on_the_next_round(
    tmp_path: Path, store: Ledger
) -> None:
    # The clock once went on leading after such a failure, with no catch-up: the slots with no leader kept no row.
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    command: ['true']\n")))
    stream = io.StringIO()
    events = EventLog(stream, fmt="json")
    clock = FakeClock()
    ledger = DropsOnce(store.url, clock=clock)
    assert ledger.claim("last", "tick", clock.now() - timedelta(hours=5), "old")
    ledger.heartbeat("old", "leader", clock.now() - timedelta(hours=6))
    leadership = Leadership(schedule, ledger, Runner(schedule, events, "me", ledger, clock=clock), events, "me", clock)
    leadership._failures = 3  # rounds failed before this one (the database was away): the backoff is long
    with contextlib.suppress(Exception):
        leadership.step()
    assert ledger.dropped and events_of(stream, "clock.catch_up") == []
    # Still leading (the lease was renewed after the failure), with slots waiting on the catch-up: the next rounds
    # come within STANDBY_POLL, not after the backoff of failed rounds; after PROMPT_TRIES, the backoff again.
    assert leadership.is_leader()
    waits = [leadership._next_wait() for _ in range(PROMPT_TRIES + 1)]
    assert waits[0] == STANDBY_POLL and waits == [STANDBY_POLL] * PROMPT_TRIES + [15.0]
    leadership.step()
    assert leadership.is_leader()
    assert leadership._next_wait() == LEADER_CHECK  # caught up, and the round went through: no backoff
    (caught,) = events_of(stream, "clock.catch_up")
    assert (caught["run"], caught["missed"]) == (1, 4)  # five slots since the last row: the latest runs
    wait_until(lambda: {r.status for r in store.history() if r.run_id != "last"} == {"missed", "ok"}, "the rows")


def test_a_start_with_work_meanwhile_does_it_beside_the_first_round_then_leads_as_a_plain_start(
    tmp_path: Path, store: Ledger
) -> None:
    """``meanwhile`` (the scheduler's first fire times at a clock's start) runs on the calling thread while the first
    round runs on another, under a short GIL switch interval that is put back after; the round's outcome is the
    same: leading, the takeover's catch-up done."""
    leadership, _, ledger, stream, _ = chores(tmp_path, store, TICK)
    seen: dict[str, object] = {}
    round_running = threading.Event()
    step = leadership.step

    def first_round(now: datetime | None = None) -> None:
        round_running.set()
        seen["round_thread"] = threading.current_thread().name
        step(now)

    def meanwhile() -> None:
        seen["meanwhile_thread"] = threading.current_thread().name
        seen["overlapped"] = round_running.wait(20)  # the round started while this work was still going on
        seen["interval"] = sys.getswitchinterval()

    leadership.step = first_round  # type: ignore[method-assign]
    before = sys.getswitchinterval()
    try:
        leadership.start(now=ledger.clock.now(), meanwhile=meanwhile)
        assert seen == {"meanwhile_thread": threading.current_thread().name, "overlapped": True,
                        "interval": SHARED_SWITCH, "round_thread": "takeover"}  # fmt: skip
        assert sys.getswitchinterval() == before
        assert leadership.is_leader()
        assert [e["event"] for e in events_of(stream, "clock.leader")] == ["clock.leader"]
        assert leadership._due is None  # the takeover's catch-up is done
    finally:
        leadership.stopped.set()
