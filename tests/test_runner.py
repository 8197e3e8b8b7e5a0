"""The Runner: overlap policies, retries with backoff, and failures that stay inside their run."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from dynoclock.observe.timefmt import iso_utc
from tests import jobs_for_tests
from tests.support.runner import Harness, now_slot

Write = Callable[[str], Path]
JOBS = "tests.jobs_for_tests"


def events_of_run(h: Harness, run_id: str) -> list[str]:
    return [e["event"] for e in h.captured.events if e.get("run_id") == run_id and e["event"] != "run.output"]


def wait_for_event(h: Harness, event: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := h.captured.of(event, **match)):
        assert time.monotonic() < deadline, f"no {event} {match}: {h.captured.events}"
        time.sleep(0.02)
    return found[0]


# ---- overlap ---------------------------------------------------------------------------------


def test_overlap_skip_skips_a_slot_while_the_previous_run_is_running(write_schedule: Write) -> None:
    name = f"gate-{uuid.uuid4().hex}"
    h = Harness.load(write_schedule(f"jobs:\n  task: {{every: 1s, python: '{JOBS}:hold', kwargs: {{name: {name}}}}}\n"))
    first, second = now_slot(), now_slot() + timedelta(seconds=1)
    h.runner.submit("task", first)
    h.wait_running("task")
    outcome = h.run("task", second)
    assert (outcome.status, outcome.error) == ("skipped", "overlap=skip: the previous run is still running")
    jobs_for_tests.gate(name).set()
    ok = wait_for_event(h, "run.ok", job="task")
    assert ok["scheduled_for"] == iso_utc(first)
    assert ok["detail"] == f"released by {name}"
    [skipped] = h.captured.of("run.skipped", job="task")
    assert skipped["scheduled_for"] == iso_utc(second)
    assert len(h.captured.of("run.start", job="task")) == 1  # the skipped slot never started


def test_overlap_allow_runs_slots_side_by_side(write_schedule: Write) -> None:
    name = f"barrier-{uuid.uuid4().hex}"
    h = Harness.load(
        write_schedule(
            f"jobs:\n  task: {{every: 1s, overlap: allow, python: '{JOBS}:rendezvous', kwargs: {{name: {name}}}}}\n"
        )
    )
    first, second = now_slot(), now_slot() + timedelta(seconds=1)
    h.runner.submit("task", first)
    h.wait_running("task")
    outcome = h.run("task", second)  # returns only when both runs are inside the function at once
    assert (outcome.status, outcome.detail) == ("ok", f"met at {name}")
    wait_for_event(h, "run.ok", job="task", scheduled_for=iso_utc(first))


def test_overlap_replace_interrupts_the_running_run(write_schedule: Write, tmp_path: Path) -> None:
    marker = tmp_path / "first-started"
    h = Harness.load(
        write_schedule(
            f"jobs:\n  task: {{every: 1s, overlap: replace, python: '{JOBS}:hold_first',"
            f" kwargs: {{marker: '{marker}'}}}}\n"
        )
    )
    first, second = now_slot(), now_slot() + timedelta(seconds=1)
    h.runner.submit("task", first)
    h.wait_running("task")
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:  # the first run is inside the function
        time.sleep(0.01)
    outcome = h.run("task", second)
    assert (outcome.status, outcome.detail) == ("ok", "quick run")
    interrupted = wait_for_event(h, "run.interrupted", job="task")
    assert interrupted["error"] == "overlap=replace: a newer run started"
    assert interrupted["scheduled_for"] == iso_utc(first)
    starts = h.captured.of("run.start", job="task")
    assert [s["scheduled_for"] for s in starts] == [
        iso_utc(first),
        iso_utc(second),
    ]
    assert events_of_run(h, interrupted["run_id"]) == ["run.start", "run.interrupted"]


# ---- retries ---------------------------------------------------------------------------------


def test_retries_make_three_attempts_with_growing_delays(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(
            """
jobs:
  flaky:
    every: 1h
    retries: 2
    retry_delay: 100ms
    shell: true
    command: echo "attempt $CLOCK_ATTEMPT"; exit 1
"""
        )
    )
    outcome = h.run("flaky")
    assert (outcome.status, outcome.attempt, outcome.error) == ("failed", 3, "exit=1: attempt 3")
    [run_id] = {e["run_id"] for e in h.captured.events}  # one run, three attempts
    assert events_of_run(h, run_id) == [
        "run.start", "run.failed", "run.retry",
        "run.start", "run.failed", "run.retry",
        "run.start", "run.failed",
    ]  # fmt: skip
    assert [e["attempt"] for e in h.captured.of("run.start")] == [1, 2, 3]
    assert [e["attempt"] for e in h.captured.of("run.failed")] == [1, 2, 3]
    assert [e["delay"] for e in h.captured.of("run.retry")] == ["100ms", "200ms"]
    assert [e["line"] for e in h.captured.of("run.output")] == ["attempt 1", "attempt 2", "attempt 3"]


def test_a_retry_that_succeeds_ends_the_run_ok(write_schedule: Write, tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    h = Harness.load(
        write_schedule(
            f"""
jobs:
  flaky:
    every: 1h
    retries: 5
    retry_delay: 10ms
    shell: true
    command: test -e '{marker}' || {{ touch '{marker}'; exit 1; }}
"""
        )
    )
    outcome = h.run("flaky")
    assert (outcome.status, outcome.attempt) == ("ok", 2)
    assert [e["event"] for e in h.captured.events] == ["run.start", "run.failed", "run.retry", "run.start", "run.ok"]


def test_a_retry_never_runs_past_the_jobs_next_slot(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(
            """
jobs:
  minutely:
    every: 1m
    retries: 3
    retry_delay: 10m
    command: "false"
"""
        )
    )
    outcome = h.run("minutely")
    assert (outcome.status, outcome.attempt) == ("failed", 1)
    assert [e["event"] for e in h.captured.events] == ["run.start", "run.failed", "run.retry_dropped"]
    assert h.captured.of("run.retry_dropped")[0]["reason"] == "the next slot comes first"
    # A catch-up run (its log lines carry reason=catch_up) drops its retry the same way.
    caught_up = h.runner.execute(h.schedule.jobs["minutely"], now_slot(), reason="catch_up")
    assert (caught_up.status, caught_up.attempt) == ("failed", 1)
    assert len(h.captured.of("run.retry_dropped")) == 2


def test_without_retries_a_failure_is_final(write_schedule: Write) -> None:
    h = Harness.load(write_schedule("jobs:\n  once:\n    every: 1h\n    retries: 2\n    command: 'false'\n"))
    outcome = h.run("once", retries=False)  # as `clock.py run JOB` does
    assert (outcome.status, outcome.attempt, outcome.error) == ("failed", 1, "exit=1")
    assert not h.captured.of("run.retry")


# ---- failures stay inside their run ----------------------------------------------------------


def test_failing_jobs_leave_the_runner_working(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(
            f"""
jobs:
  raises: {{every: 1h, python: "{JOBS}:explode"}}
  exits: {{every: 1h, python: "{JOBS}:exit_interpreter"}}
  bad-exit: {{every: 1h, command: "false"}}
  fine: {{every: 1h, python: "{JOBS}:echo_args", args: [still, here]}}
"""
        )
    )
    for job in ("raises", "exits", "bad-exit"):
        assert h.run(job).status == "failed"
    assert h.run("fine").status == "ok"
    assert h.runner.running_count() == 0  # no attempt was left behind


# ---- worker threads ----------------------------------------------------------------------------


def test_a_run_waiting_for_its_start_has_its_worker_started_meanwhile_up_to_workers(write_schedule: Write) -> None:
    h = Harness.load(write_schedule('workers: 3\njobs:\n  a: {every: 1h, command: ["true"]}\n'))
    pool = h.runner.pool
    pool.name = f"worker-{uuid.uuid4().hex}"  # its threads, told from other runners'

    def threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith(f"{pool.name}-"))

    assert threads() == 0  # a runner with nothing in hand holds no idle thread
    later = now_slot() + timedelta(hours=1)
    for expected in (1, 2, 3, 3):
        h.runner.start_at(lambda: None, later)
        assert threads() == expected  # one per run waiting, before it is due; never more than workers
