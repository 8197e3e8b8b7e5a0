"""``run`` is a supervisor: the scheduler child it starts is restarted when it dies or freezes (real clocks)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynoclock.cli.args import parse_args, plainly_runs_the_clock, runs_the_clock
from dynoclock.daemon.supervisor import Child
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


@pytest.mark.parametrize(
    "argv",
    [
        [], ["run"], ["-c", "s.yaml"], ["run", "-c", "s.yaml"], ["--config", "s.yaml"], ["--config=s.yaml"],
        ["-c", "a.yaml", "--config", "b.yaml"], ["-c", "check"], ["--config="], ["-c", ""],
        ["check"], ["run", "job"], ["-c", "s.yaml", "job"], ["run", "run"], ["-c"], ["-c", "-x"], ["-c", "-"],
        ["--conf", "s.yaml"], ["-cs.yaml"], ["-h"], ["run", "--help"], ["--", "x"], ["-x"], ["next", "-c", "s.yaml"],
    ],
)  # fmt: skip
def test_the_quick_look_at_the_arguments_runs_the_clock_only_where_the_parser_would(argv: list[str]) -> None:
    # python clock.py supervises on the quick look alone (no argparse in the supervisor process): where it says
    # yes, the parser must read the same arguments as the daemon; where it says no, the parser decides.
    if plainly_runs_the_clock(argv):
        assert runs_the_clock(parse_args(argv))


def test_the_quick_look_says_yes_to_the_usual_forms() -> None:
    for argv in ([], ["run"], ["-c", "schedule.yaml"], ["run", "--config", "s.yaml"], ["--config=s.yaml"]):
        assert plainly_runs_the_clock(argv), argv


def test_the_supervisor_imports_no_parser_subprocess_threading_or_typing() -> None:
    code = (
        "import sys; sys.argv = ['clock.py', '-c', 'schedule.yaml']\n"
        "from dynoclock import __main__, signals\n"
        "from dynoclock.cli.args import plainly_runs_the_clock\n"
        "from dynoclock.daemon import supervisor\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "dynoclock.daemon.supervisor" in loaded
    assert {"argparse", "subprocess", "threading", "typing", "datetime"} & set(loaded) == set()


def test_the_child_handle_reports_exit_codes_and_signals_as_popen_does(tmp_path: Path) -> None:
    read, write = os.pipe()
    try:
        script = "import os, sys; os.write(int(sys.argv[1]), b'ok'); sys.exit(int(sys.argv[2]))"
        child = Child.start([sys.executable, "-c", script, str(write), "3"], dict(os.environ), write)
        assert child.wait() == 3 and child.poll() == 3
        assert os.read(read, 10) == b"ok"  # the descriptor passed on, as pass_fds does
        sleeper = Child.start([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), write)
        assert sleeper.poll() is None
        sleeper.send_signal(signal.SIGTERM)
        assert sleeper.wait() == -signal.SIGTERM
        sleeper.kill()  # reaped: nothing is sent (its pid may be another process's)
    finally:
        os.close(read)
        os.close(write)


def test_the_child_gets_no_other_descriptor_of_the_supervisor(tmp_path: Path) -> None:
    inherited = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(inherited, True)  # as one the supervisor's own parent passed down
    keep_r, keep_w = os.pipe()
    try:
        script = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
        out = tmp_path / "out"
        code = (
            f"import os, sys; fd = os.open({str(out)!r}, os.O_CREAT | os.O_WRONLY); os.dup2(fd, 1)\n"
            "from dynoclock.daemon.supervisor import Child\n"
            f"sys.exit(Child.start([sys.executable, '-c', {script!r}], dict(os.environ), {keep_w}).wait())"
        )
        subprocess.run([sys.executable, "-c", code], check=True, pass_fds=(inherited, keep_w))
        listed = json.loads(out.read_text())  # the child's descriptors: 0-2, the kept one, and its own listing's
        assert keep_w in listed and inherited not in listed, listed
    finally:
        for fd in (inherited, keep_r, keep_w):
            os.close(fd)


def supervise(monkeypatch: pytest.MonkeyPatch, child: list[str], timeout: str, bound_s: float = 30) -> tuple[int, str]:
    """Run the supervisor here, on a child ``python -c CHILD...`` (SIGTERM after ``bound_s``): (exit code, its log)."""
    from dynoclock.daemon.supervisor import Supervisor
    from dynoclock.observe.logs import EventLog

    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-c", *child])
    monkeypatch.setenv("CLOCK_HEARTBEAT_TIMEOUT", timeout)
    monkeypatch.setenv("SUPERVISOR_TID", str(threading.get_native_id()))
    saved = {
        signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
    }
    stream = io.StringIO()
    bound = threading.Timer(bound_s, os.kill, (os.getpid(), signal.SIGTERM))  # a supervisor restarting it stops here
    bound.start()
    try:
        code = Supervisor(events=EventLog(stream)).run()
    finally:
        bound.cancel()
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return code, stream.getvalue()


def test_a_child_that_exits_2_is_not_taken_for_frozen_when_its_exit_signal_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The child beats once, closes its end of the pipe, and exits 2 a moment later. With SIGCHLD's wake-up lost,
    # the supervisor once waited for the heartbeat bound, called the dead child frozen and started it again (a
    # schema error printed twice). It sees the exit itself now.
    from dynoclock.daemon.supervisor import Supervisor

    script = (
        "import os, time; fd = int(os.environ['CLOCK_HEARTBEAT_FD']); os.write(fd, b'g1\\n'); os.close(fd); "
        "time.sleep(0.3); raise SystemExit(2)"
    )
    monkeypatch.setattr(Supervisor, "_on_child", lambda self, signum, frame: None)  # SIGCHLD's wake-up lost
    assert supervise(monkeypatch, [script], "1.5", bound_s=10) == (2, "")


# A child that beats as the scheduler does, every PERIOD s, each beat stamped BEHIND s before it is written, for
# LAST s; then it writes how often the supervisor's thread was switched out meanwhile to OUT, and exits 0.
BEATING = """import os, sys, time
def switches():
    with open(f"/proc/{os.getppid()}/task/{os.environ['SUPERVISOR_TID']}/status") as status:
        return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
period, behind, last, out = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
fd = int(os.environ["CLOCK_HEARTBEAT_FD"]); os.write(fd, b"g1\\n")
time.sleep(0.2)
before, end = switches(), time.monotonic() + last
while time.monotonic() < end:
    os.write(fd, b"b%.6f\\n" % (time.monotonic() - behind)); time.sleep(period)
with open(out, "w") as f:
    f.write(str(switches() - before))
"""


def test_the_supervisor_reads_beats_at_its_deadlines_not_at_each_beat(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An idle clock's CPU is counted in wake-ups: 100 beats in 2 s, and the supervisor wakes for none of them (its
    # bound, 10 s, is not reached). Waking at each beat, as it did, it was switched out at least once per beat.
    out = tmp_path / "switches"
    code, log = supervise(monkeypatch, [BEATING, "0.02", "0", "2", str(out)], "10")
    assert (code, log) == (0, "")
    assert int(out.read_text()) < 10


def test_beats_read_late_count_from_when_they_were_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Beats every 0.2 s with a 1 s bound, read only at the bound: the child is never called frozen.
    code, log = supervise(monkeypatch, [BEATING, "0.2", "0", "4", str(tmp_path / "a")], "1")
    assert (code, log) == (0, "")
    # The same beats stamped 5 s old: none is within the bound, so the child is frozen as far as it can tell.
    code, log = supervise(monkeypatch, [BEATING, "0.2", "5", "4", str(tmp_path / "b")], "1", bound_s=3)
    assert "no heartbeat for 1 s: the scheduler process was frozen, killed" in log, log
