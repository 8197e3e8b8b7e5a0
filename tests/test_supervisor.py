"""``run`` is a supervisor: the scheduler child it starts is restarted when it dies or freezes (real clocks)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.support.processes import (
    TICK_COMMAND,
    ClockProcess,
    descendants,
    process_gone,
    run_cli,
    tick_slots,
    wait_until,
)

Write = Callable[[str], Path]
StartClock = Callable[..., ClockProcess]
TICKS = f"jobs:\n  tick:\n    every: 1s\n    {TICK_COMMAND}\n"


def ticks_after(folder: Path, moment: datetime, count: int) -> None:
    wait_until(lambda: sum(s > moment for s in tick_slots(folder)) >= count, f"{count} ticks after {moment}")


def assert_no_slot_twice(folder: Path) -> None:
    doubled = sorted(s for s, n in Counter(tick_slots(folder)).items() if n > 1)
    assert doubled == [], f"slots run twice: {doubled}"


def test_a_killed_scheduler_is_restarted_and_no_slot_runs_twice(
    write_schedule: Write, start_clock: StartClock, tmp_path: Path
) -> None:
    clock = start_clock(write_schedule(TICKS))
    first = clock.scheduler_pid()
    assert first != clock.pid
    clock.wait_for("run.ok", count=3)
    os.kill(first, signal.SIGKILL)  # the scheduler, not the supervisor
    killed_at = datetime.now(UTC)
    restarted = clock.wait_for("clock.restarted")
    assert restarted["reason"] == "the scheduler process was killed by SIGKILL"
    second = clock.scheduler_pid(count=2)
    assert second != first and clock.alive()
    ticks_after(tmp_path, killed_at, 3)  # the new scheduler took the lease over and runs the slots
    procs = descendants(clock.pid)
    assert clock.stop() == 0
    assert all(process_gone(pid) for pid in procs)
    assert_no_slot_twice(tmp_path)


def test_a_frozen_scheduler_is_replaced_after_the_heartbeat_bound(
    write_schedule: Write, start_clock: StartClock, tmp_path: Path
) -> None:
    clock = start_clock(write_schedule(TICKS), env={"CLOCK_HEARTBEAT_TIMEOUT": "2"})
    frozen = clock.scheduler_pid()
    clock.wait_for("run.ok", count=2)
    os.kill(frozen, signal.SIGSTOP)
    stopped_at = datetime.now(UTC)
    restarted = clock.wait_for("clock.restarted")
    assert restarted["reason"] == "no heartbeat for 2 s: the scheduler process was frozen, killed"
    assert process_gone(frozen)
    assert clock.scheduler_pid(count=2) != frozen
    ticks_after(tmp_path, stopped_at, 3)
    assert clock.stop() == 0
    assert_no_slot_twice(tmp_path)


def test_sigterm_to_the_supervisor_exits_0_and_leaves_no_process(
    write_schedule: Write, start_clock: StartClock
) -> None:
    hung = "  hung:\n    every: 1s\n    timeout: 60s\n    shell: true\n    command: \"trap '' TERM; sleep 600\"\n"
    clock = start_clock(write_schedule(f"shutdown_grace: 1s\n{TICKS}{hung}"))
    clock.wait_for("run.start", job="hung")
    # The scheduler, the hung command and its sleep (run.start is logged as the command is being started).
    wait_until(lambda: len(descendants(clock.pid)) >= 3, "the scheduler, the command and its sleep")
    procs = descendants(clock.pid)
    assert clock.stop() == 0
    assert all(process_gone(pid) for pid in procs)
    assert clock.events("clock.restarted") == []


def test_a_scheduler_that_exits_2_is_not_restarted(write_schedule: Write, tmp_path: Path) -> None:
    # The child loads the schedule (the supervisor reads none); its environment check fails: exit 2, passed on.
    schedule = write_schedule("jobs:\n  broken:\n    every: 1s\n    python: no_such_module_here:run\n")
    result = run_cli("-c", str(schedule), cwd=tmp_path, state=f"sqlite:///{tmp_path}/state.db")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no_such_module_here" in result.stderr
    assert "clock.restarted" not in result.stdout


def test_clock_supervise_0_runs_the_scheduler_in_the_first_process(
    write_schedule: Write, start_clock: StartClock
) -> None:
    clock = start_clock(write_schedule(TICKS), env={"CLOCK_SUPERVISE": "0"})
    assert clock.scheduler_pid() == clock.pid
    assert clock.stop() == 0
