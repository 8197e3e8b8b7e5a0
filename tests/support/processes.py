"""Real ``python clock.py`` processes: the one harness that starts them and reads their output.

``run_cli`` runs a command to its end (``check``, ``next``, ``run JOB``, ``history``...). ``ClockProcess`` is a
long-running one (the scheduler, ``ui``): cwd = the test's folder, stdout and stderr in one log file, read
back as logfmt events; the ``start_clock``, ``clocks`` and ``pg_clocks`` fixtures start them on a state of
their own and kill any left running at teardown. Every process gets our environment without the clock's
variables (``CLOCK_*``, ``DATABASE_URL``, ``DYNO``), plus what the test gives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.logs import events_in, parse_ts

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
TICK_COMMAND = "command: [sh, -c, 'echo $CLOCK_SCHEDULED_FOR >> ticks.txt']"  # run with cwd = tmp_path


def tool(name: str) -> str:
    """A command installed beside the Python running the tests (``rq``, ``celery``), wherever that venv is."""
    return str(Path(PYTHON).parent / name)


def clock_env(state: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a clock process: ours without any state or Heroku variables, plus ``state`` (the
    state URL; "": no state variable at all, so the default SQLite file under the cwd) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCK_") and k not in ("DATABASE_URL", "DYNO")}
    if state:
        env["CLOCK_DATABASE_URL"] = state
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, state: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python clock.py ARGS`` to its end as a real process (cwd ``cwd``, state ``state``); its output."""
    return subprocess.run(
        [PYTHON, str(ROOT / "clock.py"), *args],
        cwd=cwd,
        env=clock_env(state, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ClockProcess:
    """``python clock.py ARGS`` as a real process with cwd ``cwd``; its output goes to ``cwd/NAME.log``. ``wrap``
    is a command that execs it (``ip netns exec NS``: the pid stays the clock's)."""

    def __init__(self, cwd: Path, args: list[str], name: str, env: dict[str, str], wrap: Sequence[str] = ()):
        self.name = name
        self.log_path = cwd / f"{name}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [*wrap, PYTHON, str(ROOT / "clock.py"), *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started = datetime.now(UTC)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def scheduler_pid(self, count: int = 1) -> int:
        """The pid of the scheduler process (the supervisor's child; the process itself under CLOCK_SUPERVISE=0),
        from its ``count``-th ``clock.start`` line (a restarted scheduler logs one more)."""
        return int(self.wait_for("clock.start", count=count)["pid"])

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def events(self, event: str | None = None, **match: str) -> list[dict[str, str]]:
        """The logged events so far (of one ``event``, when given, with matching fields), parsed."""
        return list(events_in(self.lines(), event, **match))

    def wait_for(self, event: str, count: int = 1, timeout: float = 40, **match: str) -> dict[str, str]:
        """Wait until the process has logged ``count`` such events; return the ``count``-th (state decides;
        ``timeout`` only ends a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event, **match)
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {count} {event} {match} (exit={self.proc.poll()}):\n{self.text()[-6000:]}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> datetime:
        """Send ``sig``; returns the moment it was sent."""
        moment = datetime.now(UTC)
        self.proc.send_signal(sig)
        return moment

    def wait(self, timeout: float = 40) -> int:
        """Wait for the exit code."""
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> datetime:
        """SIGKILL and reap; returns the moment of the kill."""
        moment = self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return moment


class Clocks:
    """Starts the clock processes of one test, all with cwd = ``cwd`` and their state in ``state``.

    ``clocks(schedule)`` starts the scheduler on a schedule file; ``clocks.start(ARGS...)`` any other
    long-running command (``ui``). ``close`` kills every one still running (at teardown).
    """

    def __init__(self, cwd: Path, state: str):
        self.cwd = cwd
        self.state = state
        self.started: list[ClockProcess] = []

    def __call__(self, schedule: Path, env: dict[str, str] | None = None) -> ClockProcess:
        return self.start("-c", str(schedule), env=env)

    def start(
        self, *args: str, env: dict[str, str] | None = None, name: str = "", wrap: Sequence[str] = ()
    ) -> ClockProcess:
        name = name or f"clock-{len(self.started)}"
        clock = ClockProcess(self.cwd, list(args), name, clock_env(self.state, env), wrap)
        self.started.append(clock)
        return clock

    def close(self) -> None:
        for clock in self.started:
            if clock.alive():
                with contextlib.suppress(Exception):
                    clock.kill()


def _clocks(cwd: Path, state: str) -> Iterator[Clocks]:
    clocks = Clocks(cwd, state)
    try:
        yield clocks
    finally:
        clocks.close()


@pytest.fixture(name="start_clock")
def start_clock_fixture(tmp_path: Path) -> Iterator[Clocks]:
    """Clock processes on an SQLite state file of this test's own (runs, claims and the leader lease of other
    tests stay out of it)."""
    yield from _clocks(tmp_path, f"sqlite:///{tmp_path}/clock-state.db")


@pytest.fixture(name="clocks")
def clocks_fixture(tmp_path: Path, state_db: str) -> Iterator[Clocks]:
    """Clock processes on this test's ``state_db`` (SQLite or Postgres); every one still running is killed at
    teardown, before the state's schema is dropped (this fixture depends on it)."""
    yield from _clocks(tmp_path, state_db)


@pytest.fixture(name="pg_clocks")
def pg_clocks_fixture(tmp_path: Path, pg_schema_url: str) -> Iterator[Clocks]:
    """``clocks`` on a Postgres schema only."""
    yield from _clocks(tmp_path, pg_schema_url)


# ---- schedules, and what their jobs wrote ---------------------------------------------------


def write_schedule(folder: Path, text: str, name: str = "schedule.yaml") -> Path:
    """Write ``text`` to ``folder/name``; its path."""
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(name="write_schedule")
def write_schedule_fixture(tmp_path: Path) -> Callable[..., Path]:
    """``write_schedule`` into this test's folder: ``write_schedule(text, name="schedule.yaml")``."""

    def write(text: str, name: str = "schedule.yaml") -> Path:
        return write_schedule(tmp_path, text, name)

    return write


def tick_slots(folder: Path) -> list[datetime]:
    """The slots the tick command wrote to ticks.txt, in the order written (duplicates kept)."""
    path = folder / "ticks.txt"
    if not path.exists():
        return []
    return [parse_ts(line) for line in path.read_text().split()]


def slot_floor(moment: datetime, step: timedelta) -> datetime:
    """The latest slot of an epoch-anchored ``every: step`` at or before ``moment``."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = 40,
    every: float = 0.05,
    details: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` every ``every`` seconds until it is truthy; its value (state decides; ``timeout`` only
    ends a hang, and the error then adds ``details()``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{details()}" if details else ""))
        time.sleep(every)


def process_gone(pid: int, wait: float = 10) -> bool:
    """Whether process ``pid`` is gone, or goes within ``wait`` seconds (a job's process its clock killed). A zombie
    is dead (its orphaned entry waits for whoever reaps it: init here, not the clock)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except (ProcessLookupError, FileNotFoundError):
            return True
        if stat[stat.rfind(b")") + 2 :].startswith(b"Z"):
            return True
        time.sleep(0.05)
    return False


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, theirs...), from /proc (Linux)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{name}/stat").read_bytes()
                parents[int(name)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found
