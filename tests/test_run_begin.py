"""A claimed run starts only once the ledger says it started (``Ledger.begin``, through ``Claims.begin``).

A row still ``claimed`` after its clock went silent is taken over by the next leader as never started, and run.
That is safe only if no run ever starts while its row says ``claimed``: a clock whose packets were dropped right
after it claimed once ran the slot while its "started" write waited in a queue, and the next leader ran it again
(tests/test_half_open.py found it with real dropped packets).
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from dynoclock.config.loader import load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.observe.timefmt import to_ms
from dynoclock.run.claims import BEGIN_AHEAD
from dynoclock.run.handover import EARLY_MAX
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim
from dynoclock.state.writer import RunWriter
from dynoclock.timesource import SYSTEM
from tests.jobs_for_tests import gate
from tests.support.clock import FakeClock
from tests.support.processes import write_schedule

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def statuses(store: Ledger) -> dict[str, tuple[str, str]]:
    return {run.run_id: (run.status, run.clock) for run in store.history(limit=100)}


def test_many_starts_are_marked_once_even_if_the_reply_was_lost(store: Ledger) -> None:
    ids = [f"m{i}" for i in range(6)]  # enough for one statement from JSON (state/bulk.py)
    for i, run_id in enumerate(ids):
        assert store.claim(run_id, "tick", SLOT + timedelta(hours=i), "me" if i else "other")
    at = SLOT + timedelta(seconds=1)
    starts = [(run_id, 1 + i % 2, at) for i, run_id in enumerate(ids)]
    assert store.begin(starts, "me") == set(ids[1:])  # the first is another clock's claim
    assert store.begin(starts, "me") == set(ids[1:])  # the same starts again: the first reply was lost
    assert store.begin([(r, a, at + timedelta(seconds=1)) for r, a, _ in starts], "me") == set()
    runs = {run.run_id: run for run in store.history()}
    assert [(runs[r].status, runs[r].started_at, runs[r].attempt) for r in ids[1:]] == [
        ("running", at, 1 + i % 2) for i in range(1, 6)
    ]
    assert (runs["m0"].status, runs["m0"].clock) == ("claimed", "other")


def test_begin_marks_this_clocks_claims_started_once_even_if_the_reply_was_lost(store: Ledger) -> None:
    assert store.claim("r1", "tick", SLOT, "me")
    assert store.claim("r2", "tick", SLOT + timedelta(hours=1), "me")
    at = SLOT + timedelta(seconds=1)
    assert store.begin([("r1", 1, at), ("r2", 3, at)], "me") == {"r1", "r2"}  # one transaction for both
    assert statuses(store) == {"r1": ("running", "me"), "r2": ("running", "me")}
    assert store.begin([("r1", 1, at)], "me") == {"r1"}  # the same start again: its first reply was lost
    assert store.begin([("r1", 1, at + timedelta(seconds=1))], "me") == set()  # another start of a started run
    assert store.begin([("r1", 1, at)], "other") == set()
    runs = {run.run_id: run for run in store.history()}
    assert (runs["r1"].started_at, runs["r1"].attempt, runs["r2"].attempt) == (at, 1, 3)


def test_unclaim_takes_back_a_start_write_only_for_the_start_it_names(store: Ledger) -> None:
    # A run that fell due had its start written, then the clock stopped before a worker took it: its row says
    # running, but its action never started, so it is given back with that start; never a run that did start.
    at = SLOT + timedelta(seconds=1)
    for run_id in ("queued", "other-start", "retry"):
        assert store.claim(run_id, run_id, SLOT, "me")
    assert store.begin([("queued", 1, at), ("other-start", 1, at), ("retry", 2, at)], "me") == {
        "queued", "other-start", "retry"
    }  # fmt: skip
    assert store.unclaim("queued", "me") is False  # a plain release takes back only a claim
    assert store.unclaim("queued", "other", begun_at=at) is False  # another clock's give-back
    assert store.unclaim("other-start", "me", begun_at=at + timedelta(seconds=1)) is False
    assert store.unclaim("retry", "me", begun_at=at) is False  # a second attempt: the first one ran
    assert store.unclaim("queued", "me", begun_at=at) is True
    assert statuses(store) == {"other-start": ("running", "me"), "retry": ("running", "me")}


def test_begin_refuses_a_claim_another_clock_took_over_or_closed(store: Ledger) -> None:
    assert store.claim("taken", "tick", SLOT, "me")
    assert store.claim("closed", "tick", SLOT + timedelta(hours=1), "me")
    assert store.claim("free", "tick", SLOT + timedelta(hours=2), "me")
    old = {run.run_id: run for run in store.history()}
    assert store.reclaim(old["taken"], "next-leader", reason="schedule")
    assert store.interrupt(old["closed"], "clock me stopped before the run started", status="missed")
    assert store.begin([("taken", 1, SLOT), ("closed", 1, SLOT), ("free", 1, SLOT)], "me") == {"free"}
    assert store.unclaim("taken", "me") is False  # nor may it give back a claim that is no longer its own
    assert statuses(store) == {
        "taken": ("claimed", "next-leader"),
        "closed": ("missed", "me"),
        "free": ("running", "me"),
    }


def test_close_claim_records_only_this_clocks_own_claim_missed(store: Ledger) -> None:
    assert store.claim("mine", "tick", SLOT, "me")
    assert store.claim("theirs", "tick", SLOT + timedelta(hours=1), "other")
    assert store.close_claim("mine", "me", "database unreachable") is True
    assert store.close_claim("mine", "me", "database unreachable") is False
    assert store.close_claim("theirs", "me", "database unreachable") is False
    assert statuses(store) == {"mine": ("missed", "me"), "theirs": ("claimed", "other")}


def runner_on(tmp_path: Path, store: Ledger, job: str) -> tuple[Runner, io.StringIO]:
    schedule = load_schedule(str(write_schedule(tmp_path, f"jobs:\n  probe:\n    every: 1h\n    {job}\n")))
    stream = io.StringIO()
    return Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url)), stream


def test_a_run_starts_only_once_its_row_says_running(tmp_path: Path, store: Ledger) -> None:
    runner, _ = runner_on(
        tmp_path, store, f"python: tests.jobs_for_tests:own_row_status\n    kwargs: {{url: '{store.url}'}}"
    )
    slot = datetime.now(UTC).replace(microsecond=0)
    outcome = runner.execute(runner.schedule.jobs["probe"], slot)
    assert (outcome.status, outcome.detail) == ("ok", "running")  # the job saw its own row started, not claimed


def test_a_claimed_run_that_another_clock_took_over_before_it_started_is_never_run(
    tmp_path: Path, store: Ledger
) -> None:
    # A clock claimed a slot, then lost the database until the next leader had taken the run over: it must not
    # run it as well when its turn comes.
    runner, stream = runner_on(tmp_path, store, f"command: [sh, -c, 'echo ran >> ran.txt']\n    cwd: '{tmp_path}'")
    slot = datetime.now(UTC).replace(microsecond=0)
    assert store.claim("r1", "probe", slot, "me")
    assert store.reclaim(store.history()[0], "next-leader", reason="schedule")
    outcome = runner.execute(runner.schedule.jobs["probe"], slot, claimed_as="r1")
    assert outcome.status == "duplicate"
    assert not (tmp_path / "ran.txt").exists()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["run.duplicate"]
    assert statuses(store) == {"r1": ("claimed", "next-leader")}


def test_runs_starting_together_are_marked_in_a_few_transactions_each_with_its_own_answer(store: Ledger) -> None:
    ledger = Ledger(store.url)
    writer = RunWriter(ledger, EventLog(io.StringIO()), SYSTEM, "me")
    ids = [f"r{i}" for i in range(200)]
    for i, run_id in enumerate(ids):
        assert ledger.claim(run_id, "tick", SLOT + timedelta(minutes=i), "me" if i % 10 else "other")
    commits: list[int] = []
    event.listen(ledger.engine, "commit", lambda conn: commits.append(1))
    answers: dict[str, bool] = {}
    at = datetime.now(UTC)
    threads = [threading.Thread(target=lambda r=r: answers.update({r: writer.begin(r, 1, at)})) for r in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == {r: i % 10 != 0 for i, r in enumerate(ids)}  # every tenth is another clock's claim
    assert len(commits) < len(ids)  # runs that start while a transaction is in flight share the next one


def test_runs_falling_due_together_ask_for_their_start_before_a_worker_is_free_and_are_given_back_at_a_stop(
    tmp_path: Path, store: Ledger
) -> None:
    # One worker, held by the first run: the other two wait for it in the pool's queue. Their start writes are
    # asked for as they fall due (a burst does not pay one round trip per wave of workers), so their rows say
    # running before any worker takes them. The clock then stops before they started: they are given back, start
    # write and claim, so that the next leader's catch-up finds the slots free and runs them.
    held = f"burst-{uuid.uuid4().hex}"  # a gate of this test's own (the module keeps gates across tests)
    job = f"python: tests.jobs_for_tests:hold\n    kwargs: {{name: {held}}}"
    text = "workers: 1\njobs:\n" + "".join(f"  {name}:\n    every: 1h\n    {job}\n" for name in ("first", "a", "b"))
    schedule = load_schedule(str(write_schedule(tmp_path, text)))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url))
    assert runner.claims is not None and runner.writer is not None
    slot = datetime.now(UTC).replace(microsecond=0)
    claims = {name: runner.claims.new(name, slot) for name in ("first", "a", "b")}
    assert runner.claims.batch(list(claims.values())) == {c.run_id for c in claims.values()}
    for name, claim in claims.items():
        runner.submit(name, slot, claimed_as=claim.run_id)
    deadline = time.monotonic() + 20
    while {s for s, _ in statuses(store).values()} != {"running"} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [s for s, _ in statuses(store).values()] == ["running"] * 3  # a and b still wait for the one worker
    while not runner.inflight.running("first") and time.monotonic() < deadline:
        time.sleep(0.02)  # a run goes to the worker once its start write is answered: first is in it, held
    runner.release_waiting()  # the clock starts stopping
    gate(held).set()
    runner.drain(time.monotonic() + 20)
    runner.writer.flush(10)
    assert statuses(store) == {claims["first"].run_id: ("ok", "me")}
    released = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted(e["job"] for e in released if e["event"] == "run.released") == ["a", "b"]


def test_a_runs_start_write_is_made_just_ahead_of_its_start_which_still_waits_for_its_time(
    tmp_path: Path, store: Ledger
) -> None:
    # The start write is asked for BEGIN_AHEAD before the start, so that its answer (a round trip) is in when the
    # run starts. On a clock that moves only when told: at 3 ms before the slot the row says running and the job
    # has not started; it starts at its slot, not before.
    clock = FakeClock(SLOT - timedelta(seconds=1))
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  probe:\n    every: 1h\n    command: ['true']\n")))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url), clock=clock)
    assert runner.claims is not None and runner.writer is not None
    claim = runner.claims.new("probe", SLOT)
    assert runner.claims.batch([claim]) == {claim.run_id}
    runner.submit("probe", SLOT, claimed_as=claim.run_id)
    clock.advance(timedelta(seconds=1) - BEGIN_AHEAD / 2)
    deadline = time.monotonic() + 20
    while statuses(store)[claim.run_id][0] != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert statuses(store)[claim.run_id] == ("running", "me")
    time.sleep(0.2)  # time enough for a run that did not wait for its slot to start
    assert "run.start" not in stream.getvalue()
    clock.advance(BEGIN_AHEAD)
    while "run.ok" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.writer.flush(10)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["lateness_ms"]) for e in events if e["event"] == "run.start"] == [
        ("run.start", to_ms(BEGIN_AHEAD / 2))
    ]
    assert statuses(store)[claim.run_id] == ("ok", "me")


def test_overlap_is_judged_at_the_start_not_when_the_run_is_handed_over_ahead_of_it(
    tmp_path: Path, store: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # overlap: skip. The first run is still running when the second is handed over (BEGIN_AHEAD before its slot)
    # and ends before that slot: the second runs, as it would have had it been handed over at its slot. A wider
    # BEGIN_AHEAD here: the history writer's batch window moves this clock 50 ms a batch by itself.
    ahead = timedelta(seconds=1)
    monkeypatch.setattr("dynoclock.run.handover.BEGIN_AHEAD", ahead)
    held = f"overlap-{uuid.uuid4().hex}"
    job = f"every: 1h\n    overlap: skip\n    python: tests.jobs_for_tests:hold\n    kwargs: {{name: {held}}}"
    text = f"jobs:\n  probe:\n    {job}\n"
    clock = FakeClock(SLOT - timedelta(seconds=1))
    schedule = load_schedule(str(write_schedule(tmp_path, text)))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url), clock=clock)
    assert runner.claims is not None and runner.writer is not None
    first, second = runner.claims.new("probe", SLOT), runner.claims.new("probe", SLOT + timedelta(seconds=2))
    assert runner.claims.batch([first, second]) == {first.run_id, second.run_id}
    runner.submit("probe", SLOT, claimed_as=first.run_id)
    runner.submit("probe", SLOT + timedelta(seconds=2), claimed_as=second.run_id)
    clock.advance(1)  # the first slot: it runs, held
    deadline = time.monotonic() + 20
    while "run.start" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.writer.flush(10)  # its start time written: the writer's batch window moves this clock by itself
    handed = threading.Event()
    start = runner.inflight.start

    def handing(run_id: str) -> bool:
        handed.set() if run_id == second.run_id else None
        return start(run_id)

    runner.inflight.start = handing  # type: ignore[method-assign]
    clock.advance(timedelta(seconds=2) - ahead / 2)  # the second is handed over, the first still runs
    assert handed.wait(20)
    time.sleep(0.3)  # for its worker to take it (before the change, it judged overlap there: skipped)
    gate(held).set()  # the first ends before the second slot
    while statuses(store)[first.run_id][0] != "ok" and time.monotonic() < deadline:
        runner.writer.flush(1)
    clock.advance(ahead)
    while statuses(store)[second.run_id][0] in ("claimed", "running") and time.monotonic() < deadline:
        runner.writer.flush(1)
    assert statuses(store) == {first.run_id: ("ok", "me"), second.run_id: ("ok", "me")}


# ---- a lone run waits for its start in its worker ---------------------------------------------------------------


def _recorded_hand_overs(runner: Runner, clock: FakeClock) -> list[datetime]:
    """The clock's time at each hand-over of a run to the worker pool, as it happens."""
    handed: list[datetime] = []
    submit = runner.pool.submit

    def recording(task: Callable[[], None]) -> None:
        handed.append(clock.now())
        submit(task)

    runner.pool.submit = recording  # type: ignore[method-assign]
    return handed


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _lone_run_handed_over(
    tmp_path: Path, store: Ledger
) -> tuple[FakeClock, Runner, io.StringIO, list[datetime], Claim]:
    """A claimed run submitted alone, its clock moved to BEGIN_AHEAD / 2 before its slot and the run handed over."""
    clock = FakeClock(SLOT - timedelta(seconds=1))
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  probe:\n    every: 1h\n    command: ['true']\n")))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url), clock=clock)
    assert runner.claims is not None and runner.writer is not None
    handed = _recorded_hand_overs(runner, clock)
    claim = runner.claims.new("probe", SLOT)
    assert runner.claims.batch([claim]) == {claim.run_id}
    runner.submit("probe", SLOT, claimed_as=claim.run_id)
    clock.advance(timedelta(seconds=1) - BEGIN_AHEAD / 2)
    _wait_for(lambda: len(handed) == 1, "the hand-over")
    return clock, runner, stream, handed, claim


def test_a_lone_run_goes_to_its_worker_once_its_start_is_written_and_the_worker_waits_for_its_start(
    tmp_path: Path, store: Ledger
) -> None:
    # Handed over at the answer, BEGIN_AHEAD before its slot, not at the slot by the timer: its start is then one
    # thread's wake-up (the worker's own timer), not two. It still starts at its slot, not at the hand-over.
    clock, runner, stream, handed, claim = _lone_run_handed_over(tmp_path, store)
    assert runner.writer is not None
    assert handed == [SLOT - BEGIN_AHEAD / 2]  # before its slot: the clock has not moved since
    assert statuses(store)[claim.run_id] == ("running", "me")  # handed over once its start was written
    time.sleep(0.2)  # time enough for a run that did not wait for its slot to start
    assert "run.start" not in stream.getvalue()
    clock.advance(BEGIN_AHEAD)
    _wait_for(lambda: "run.ok" in stream.getvalue(), "the run")
    runner.writer.flush(10)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["lateness_ms"] for e in events if e["event"] == "run.start"] == [to_ms(BEGIN_AHEAD / 2)]
    assert statuses(store)[claim.run_id] == ("ok", "me")


def test_of_runs_falling_due_together_only_a_few_wait_in_workers_and_the_rest_are_handed_over_at_their_start(
    tmp_path: Path, store: Ledger
) -> None:
    # A burst's workers are not woken ahead of its start: they would hold the start writes' thread off the
    # interpreter lock. EARLY_MAX of them are handed over early; the others at the slot, and every one runs.
    count = EARLY_MAX + 6
    text = "jobs:\n" + "".join(f"  job-{i}:\n    every: 1h\n    command: ['true']\n" for i in range(count))
    clock = FakeClock(SLOT - timedelta(seconds=1))
    schedule = load_schedule(str(write_schedule(tmp_path, text)))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url), clock=clock)
    assert runner.claims is not None and runner.writer is not None
    handed = _recorded_hand_overs(runner, clock)
    claims = [runner.claims.new(f"job-{i}", SLOT) for i in range(count)]
    assert runner.claims.batch(claims) == {c.run_id for c in claims}
    for claim in claims:
        runner.submit(claim.job, SLOT, claimed_as=claim.run_id)
    clock.advance(timedelta(seconds=1) - BEGIN_AHEAD / 2)
    _wait_for(lambda: {s for s, _ in statuses(store).values()} == {"running"}, "the start writes")
    _wait_for(lambda: len(handed) == EARLY_MAX, "the early hand-overs")
    time.sleep(0.2)  # time enough for the others to be handed over, had they been
    assert handed == [SLOT - BEGIN_AHEAD / 2] * EARLY_MAX
    assert "run.start" not in stream.getvalue()
    clock.advance(BEGIN_AHEAD)
    _wait_for(lambda: stream.getvalue().count("run.ok") == count, "the runs")
    assert len(handed) == count and min(handed[EARLY_MAX:]) >= SLOT  # (the history writer's pauses move this clock)
    runner.writer.flush(10)
    assert {s for s, _ in statuses(store).values()} == {"ok"}


def test_a_run_waiting_in_its_worker_for_its_start_is_given_back_when_the_clock_stops(
    tmp_path: Path, store: Ledger
) -> None:
    # Stopped between the hand-over and the start: the run never starts, and its row goes (start write and
    # claim), so that the next leader's catch-up finds the slot free and runs it.
    _, runner, stream, _, claim = _lone_run_handed_over(tmp_path, store)
    assert runner.writer is not None
    assert statuses(store) == {claim.run_id: ("running", "me")}
    runner.drain(time.monotonic() + 20)  # the clock stops before the slot
    runner.writer.flush(10)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("run.")] == ["run.released"]
    assert statuses(store) == {}
