"""The clock as a real process: stop signals with hung and quick jobs, and hung jobs that starve nothing."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.support.logs import events_in, logfmt_fields
from tests.support.processes import PYTHON, ROOT, ClockProcess, process_gone

Write = Callable[[str], Path]
StartClock = Callable[..., ClockProcess]

# Ignores SIGTERM (the trap is inherited by sleep), so only SIGKILL ends it; prints its pid first.
HUNG = "trap '' TERM; echo $$$$; sleep 600"


def hung_schedule(grace: str | None = "1s", extra_jobs: str = "") -> str:
    head = f"shutdown_grace: {grace}\n" if grace else ""
    return f"""{head}jobs:
  hung:
    every: 1s
    timeout: 60s
    shell: true
    command: "{HUNG}"
{extra_jobs}"""


def index_of(lines: list[str], event: str, **match: str) -> int:
    for i, line in enumerate(lines):
        fields = logfmt_fields(line)
        if fields.get("event") == event and all(fields.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {event} {match} in:\n" + "\n".join(lines))


def started_hung_job(clock: ClockProcess) -> tuple[str, int]:
    """Wait until the hung job runs (its pid is printed); return its run id and pid."""
    fields = clock.wait_for("run.output", job="hung", stream="stdout")
    return fields["run_id"], int(fields["line"])


def assert_stopped_at_shutdown(lines: list[str], run_id: str, sig: str) -> None:
    stopping = index_of(lines, "clock.stopping", signal=sig)
    interrupted = index_of(lines, "run.interrupted", run_id=run_id)
    stop = index_of(lines, "clock.stop")
    assert stopping < interrupted < stop
    assert logfmt_fields(lines[interrupted])["error"] == "stopped at shutdown"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_kills_a_hung_job_and_exits_0(
    write_schedule: Write, start_clock: StartClock, sig: signal.Signals
) -> None:
    clock = start_clock(write_schedule(hung_schedule()))
    run_id, pid = started_hung_job(clock)
    clock.signal(sig)
    assert clock.wait(timeout=35) == 0
    assert_stopped_at_shutdown(clock.lines(), run_id, sig.name)
    assert process_gone(pid)  # the job's process did not outlive the clock


def test_a_second_sigterm_while_stopping_changes_nothing(write_schedule: Write, start_clock: StartClock) -> None:
    clock = start_clock(write_schedule(hung_schedule()))
    run_id, _ = started_hung_job(clock)
    clock.signal(signal.SIGTERM)
    clock.wait_for("clock.stopping")
    clock.signal(signal.SIGTERM)  # Heroku may send it more than once
    assert clock.wait(timeout=35) == 0
    lines = clock.lines()
    assert_stopped_at_shutdown(lines, run_id, "SIGTERM")
    [again] = events_in(lines, "clock.signal")
    assert (again["signal"], again["note"]) == ("SIGTERM", "already stopping")
    assert not [line for line in lines if "Traceback" in line]


def test_a_quick_job_running_at_sigterm_finishes_before_exit(write_schedule: Write, start_clock: StartClock) -> None:
    clock = start_clock(
        write_schedule(
            """
shutdown_grace: 20s
jobs:
  quick:
    every: 1s
    shell: true
    command: echo begin; sleep 1; echo done
"""
        )
    )
    run_id = clock.wait_for("run.output", job="quick", line="begin")["run_id"]
    clock.signal(signal.SIGTERM)
    assert clock.wait(timeout=35) == 0
    lines = clock.lines()
    ok = index_of(lines, "run.ok", run_id=run_id)
    assert index_of(lines, "clock.stopping") < ok < index_of(lines, "clock.stop")
    assert [f["line"] for f in events_in(lines, "run.output", run_id=run_id)] == ["begin", "done"]


@pytest.mark.slow
def test_default_grace_stops_a_hung_job_before_herokus_sigkill(write_schedule: Write, start_clock: StartClock) -> None:
    clock = start_clock(write_schedule(hung_schedule(grace=None)))
    run_id, pid = started_hung_job(clock)
    clock.signal(signal.SIGTERM)
    assert clock.wait(timeout=35) == 0  # Heroku would SIGKILL at 30 s
    lines = clock.lines()
    assert_stopped_at_shutdown(lines, run_id, "SIGTERM")
    assert logfmt_fields(lines[index_of(lines, "clock.stopping")])["grace_s"] == "25.0"
    assert process_gone(pid)


def test_ten_hung_jobs_do_not_delay_an_eleventh(write_schedule: Write, start_clock: StartClock, tmp_path: Path) -> None:
    slots_file = tmp_path / "slots.txt"
    hung = "".join(f"  hung-{n}:\n    every: 1s\n    timeout: 30s\n    command: [sleep, '100']\n" for n in range(1, 11))
    clock = start_clock(
        write_schedule(
            f"""
shutdown_grace: 1s
jobs:
{hung}  broken:
    every: 1s
    python: tests.jobs_for_tests:explode
  tick:
    every: 1s
    shell: true
    command: echo "$CLOCK_SCHEDULED_FOR" >> '{slots_file}'
"""
        )
    )
    for n in range(1, 11):
        clock.wait_for("run.start", job=f"hung-{n}")
    deadline = time.monotonic() + 30
    while len(_read_slots(slots_file)) < 4:  # about 4 s of ticks
        assert time.monotonic() < deadline and clock.proc.poll() is None, clock.text()
        time.sleep(0.1)
    clock.signal(signal.SIGTERM)
    assert clock.wait(timeout=35) == 0
    lines = clock.lines()
    ticks = _read_slots(slots_file)
    assert len(ticks) >= 4
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks)), ticks
    # The hung runs were all still running while the tick ran, and were stopped at shutdown.
    for n in range(1, 11):
        [start] = list(events_in(lines, "run.start", job=f"hung-{n}"))
        assert list(events_in(lines, "run.interrupted", run_id=start["run_id"]))
    assert len(list(events_in(lines, "run.failed", job="broken"))) >= 3  # failing every second, harmlessly


def _read_slots(path: Path) -> list[datetime]:
    if not path.exists():
        return []
    return [datetime.fromisoformat(line.replace("Z", "+00:00")) for line in path.read_text().split()]


def test_a_log_line_from_a_signal_handler_never_deadlocks_the_log(tmp_path: Path) -> None:
    """A second SIGTERM can arrive while the first one's handler is writing a log line: the handler's
    own line must not wait forever for the lock the interrupted write holds."""
    script = """
import os, signal, sys
from dynoclock.observe.logs import EventLog

class Stream:
    sent = False
    def write(self, text):
        sys.stdout.write(text)
        if not Stream.sent:
            Stream.sent = True
            os.kill(os.getpid(), signal.SIGTERM)  # delivered while this line's write holds the lock
    def flush(self):
        sys.stdout.flush()

events = EventLog(Stream(), fmt="logfmt")
signal.signal(signal.SIGTERM, lambda signum, frame: events.emit("clock.signal", note="already stopping"))
events.emit("clock.stopping")
events.emit("clock.stop")
"""
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert [logfmt_fields(line)["event"] for line in result.stdout.splitlines()] == [
        "clock.stopping",
        "clock.signal",
        "clock.stop",
    ]


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (the SigCgt mask in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (signum - 1) & 1)


def test_a_sigterm_while_the_clock_is_still_starting_stops_it_cleanly(
    write_schedule: Write, start_clock: StartClock
) -> None:
    # Heroku may restart a dyno that started a moment ago. The signal comes as soon as the process handles it at
    # all: before its imports, its schedule and its database are ready (which took about half a second, during
    # which a SIGTERM used to kill the clock with exit 143 and no log line). (SIGINT cannot be timed this way:
    # Python catches it from its own start, raising KeyboardInterrupt.)
    sig = signal.SIGTERM
    clock = start_clock(write_schedule("jobs:\n  tick:\n    every: 1s\n    command: ['true']\n"))
    deadline = time.monotonic() + 30
    while not catches(clock.pid, sig):
        assert clock.proc.poll() is None and time.monotonic() < deadline, clock.text()
        time.sleep(0.001)
    clock.proc.send_signal(sig)
    assert clock.proc.wait(timeout=30) == 0, clock.text()
    names = [e["event"] for e in clock.events()]
    assert names[0] == "clock.start"
    assert "clock.stopping" in names and names[-1] == "clock.stop"
    assert "run.start" not in names
