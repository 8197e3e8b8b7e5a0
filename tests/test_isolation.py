"""``isolate: process``: a Python job in a worker process cannot freeze or take down the clock (real clocks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from dynoclock.observe.timefmt import iso_utc
from tests.support.logs import parse_ts
from tests.support.processes import TICK_COMMAND, ClockProcess, descendants, process_gone, tick_slots, wait_until

Write = Callable[[str], Path]
StartClock = Callable[..., ClockProcess]
JOBS = "tests.jobs_for_tests"
TICK = f"  tick:\n    every: 1s\n    {TICK_COMMAND}\n"
HOG = "  hog:\n    every: 3s\n    timeout: {timeout}\n    isolate: process\n    python: re:match\n" + (
    '    args: ["(a+)+$", "' + "a" * 40 + 'b"]\n'
)  # catastrophic backtracking: hours inside C code that holds the GIL


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_job_holding_the_gil_freezes_neither_other_jobs_nor_its_timeout_nor_sigterm(
    write_schedule: Write, start_clock: StartClock, tmp_path: Path
) -> None:
    # Two hogs: the first one's timeout is recorded while ticks go on, the second one is still running (for
    # hours) when SIGTERM comes.
    hogs = HOG.format(timeout="2s").replace("hog:", "hog-short:") + HOG.format(timeout="10m")
    clock = start_clock(write_schedule(f"shutdown_grace: 1s\njobs:\n{TICK}{hogs}"))
    start = clock.wait_for("run.start", job="hog-short")
    timed_out = clock.wait_for("run.timeout", job="hog-short")
    assert timed_out["error"] == "timeout=2s exceeded"
    # Every tick slot while the hog held the GIL ran, and was logged before the hog's timeout was.
    lines = clock.lines()
    timeout_line = next(i for i, line in enumerate(lines) if "event=run.timeout" in line and "hog-short" in line)
    first, last = parse_ts(start["ts"]), parse_ts(timed_out["ts"]) - timedelta(seconds=1)
    during = [s for s in tick_slots(tmp_path) if first < s <= last]
    assert len(during) >= 1 and len(set(during)) == len(during)
    for slot in during:
        ok = next(
            i for i, line in enumerate(lines) if "event=run.ok" in line and f"scheduled_for={iso_utc(slot)}" in line
        )
        assert ok < timeout_line
    clock.wait_for("run.start", job="hog")
    procs = descendants(clock.pid)  # the scheduler and its worker processes
    assert len(procs) >= 3
    assert clock.stop() == 0
    clock.wait_for("run.interrupted", job="hog")
    assert clock.events("clock.restarted") == []
    assert all(process_gone(pid) for pid in procs)


def test_a_worker_process_that_dies_fails_only_its_run_and_is_replaced(
    write_schedule: Write, start_clock: StartClock
) -> None:
    jobs = f"""jobs:
{TICK}  exits:
    every: 1s
    isolate: process
    python: os:_exit
    args: [3]
  segfaults:
    every: 1s
    isolate: process
    python: ctypes:string_at
    args: [0]
"""
    clock = start_clock(write_schedule(jobs))
    for job, error in (
        ("exits", "worker process died: exit 3"),
        ("segfaults", "worker process died: killed by SIGSEGV"),
    ):
        for failed in (clock.wait_for("run.failed", job=job), clock.wait_for("run.failed", count=3, job=job)):
            assert failed["error"] == error
    ticks = len(clock.events("run.ok", job="tick"))
    clock.wait_for("run.ok", count=ticks + 2, job="tick")
    assert len(clock.events("clock.start")) == 1 and clock.events("clock.restarted") == []
    assert clock.stop() == 0


def test_a_fork_inside_a_worker_process_never_outlives_its_run(
    write_schedule: Write, start_clock: StartClock, tmp_path: Path
) -> None:
    # The forked copies ignore SIGTERM and would sleep forever; one returns at once, one runs past its timeout.
    jobs = f"""jobs:
  forks:
    every: 2s
    isolate: process
    python: {JOBS}:fork_stubborn_child
    args: ["{tmp_path}/quick.pids"]
  forks-and-hangs:
    every: 2s
    timeout: 1s
    isolate: process
    python: {JOBS}:fork_stubborn_child
    args: ["{tmp_path}/hung.pids", 600]
"""
    clock = start_clock(write_schedule(jobs))
    # A run may time out before its job forks (a worker process starting on a loaded machine): wait for a fork
    # of each job, then for the end of a run that began after it.
    wait_until(lambda: pids_in(tmp_path / "quick.pids") and pids_in(tmp_path / "hung.pids"), "a fork of each job")
    forked = pids_in(tmp_path / "quick.pids") + pids_in(tmp_path / "hung.pids")
    clock.wait_for("run.ok", count=len(clock.events("run.ok", job="forks")) + 1, job="forks")
    clock.wait_for("run.timeout", count=len(clock.events("run.timeout", job="forks-and-hangs")) + 1,
                   job="forks-and-hangs")  # fmt: skip
    assert all(process_gone(pid) for pid in forked), [pid for pid in forked if not process_gone(pid, 0.1)]
    assert clock.stop() == 0


def test_max_memory_caps_a_worker_process(write_schedule: Write, start_clock: StartClock) -> None:
    jobs = f"""jobs:
{TICK}  greedy:
    every: 2s
    isolate: process
    max_memory: 256MB
    python: {JOBS}:allocate
    args: [3]
"""
    clock = start_clock(write_schedule(jobs))
    failed = clock.wait_for("run.failed", job="greedy")
    assert failed["error"].startswith("MemoryError")
    ticks = len(clock.events("run.ok", job="tick"))
    clock.wait_for("run.ok", count=ticks + 2, job="tick")
    assert clock.stop() == 0


@pytest.mark.parametrize("supervise", ["1", "0"])
def test_sigterm_stops_a_running_worker_process_and_leaves_no_process_behind(
    write_schedule: Write, start_clock: StartClock, tmp_path: Path, supervise: str
) -> None:
    pids = tmp_path / "pids"
    jobs = f"""shutdown_grace: 1s
jobs:
  sleeper:
    every: 2s
    isolate: process
    python: {JOBS}:fork_stubborn_child
    args: ["{pids}", 600]
"""
    clock = start_clock(write_schedule(jobs), env={"CLOCK_SUPERVISE": supervise})
    wait_until(lambda: pids_in(pids), "the job's fork")
    procs = descendants(clock.pid)
    assert set(pids_in(pids)) <= set(procs)
    assert clock.stop() == 0
    clock.wait_for("run.interrupted", job="sleeper")
    assert all(process_gone(pid) for pid in procs)
