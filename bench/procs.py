"""The benchmarks' child processes: the clock (``python clock.py`` in a subprocess, cwd = the repo) and the plain
APScheduler script, their output read line by line, and what /proc says about them."""

from __future__ import annotations

import compileall
import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO

PYTHON = sys.executable
READY = "event=clock.ready"
START = "event=clock.start"
FINAL_RUN = re.compile(r"event=run\.(ok|failed|timeout|skipped|interrupted|missed)\b")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process whose stdout is read line by line in a thread (so it never blocks on a full pipe)."""

    popen: subprocess.Popen[str]
    spawned: float  # time.monotonic() just before the spawn
    log_path: Path
    on_line: Callable[[str, float], None] | None = None
    marks: dict[str, float] = field(default_factory=dict)  # first monotonic time a marker was seen
    markers: tuple[str, ...] = ()
    lines: int = 0
    _reader: threading.Thread | None = None
    _seen: threading.Condition = field(default_factory=threading.Condition)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.log_path.open("w") as log:
            for line in self.popen.stdout:
                now = time.monotonic()
                log.write(line)
                self.lines += 1
                if self.on_line is not None:
                    self.on_line(line, now)
                for marker in self.markers:
                    if marker not in self.marks and marker in line:
                        with self._seen:
                            self.marks[marker] = now
                            self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, marker: str, timeout: float) -> float | None:
        """Seconds from the spawn to the first line containing ``marker``; None on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while marker not in self.marks:
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and self._reader_done()):
                    return None
                self._seen.wait(min(left, 0.05))
            return self.marks[marker] - self.spawned

    def since_spawn(self, marker: str) -> float | None:
        return self.marks[marker] - self.spawned if marker in self.marks else None

    def _reader_done(self) -> bool:
        return self._reader is None or not self._reader.is_alive()

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return self.popen.returncode


@functools.cache
def compile_once() -> None:
    """Byte-compile the repo's modules before the first process starts, as ``pip install`` does for a package
    (and for the libraries both subjects import): otherwise, where PYTHONDONTWRITEBYTECODE is set, every start-up
    would compile the clock's own source again, which no deployed clock does."""
    for folder in ("dynoclock", "bench", "jobs"):
        compileall.compile_dir(REPO / folder, quiet=1)


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    markers: Sequence[str] = (),
    on_line: Callable[[str, float], None] | None = None,
) -> Proc:
    """Start ``argv`` with cwd = the repo; stderr goes to ``<log>.err``."""
    compile_once()
    dropped = ("DYNO", "CLOCK_SCHEDULE", "PYTHONDONTWRITEBYTECODE")
    child_env = {k: v for k, v in os.environ.items() if k not in dropped}
    child_env |= {"PYTHONUNBUFFERED": "1", "LOG_FORMAT": "logfmt"} | (env or {})
    err = log_path.with_suffix(".err").open("w")
    spawned = time.monotonic()
    popen = subprocess.Popen(
        list(argv), cwd=REPO, env=child_env, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
    )
    err.close()
    proc = Proc(popen, spawned, log_path, on_line=on_line, markers=tuple(markers))
    proc._reader = threading.Thread(target=proc._read, name=f"read-{popen.pid}", daemon=True)
    proc._reader.start()
    return proc


def clock_argv(schedule: Path, *extra: str) -> list[str]:
    return [PYTHON, str(REPO / "clock.py"), *extra, "-c", str(schedule)]


def plain_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "bench.plain_apscheduler", *args]


def stderr_tail(proc: Proc, lines: int = 5) -> str:
    path = proc.log_path.with_suffix(".err")
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return ""


def ready_marker() -> tuple[str, str]:
    """The log event that says the scheduler runs, and a note when this clock has none yet.

    ``clock.ready`` is emitted once APScheduler has started; a clock without it is timed to ``clock.start``
    (emitted before the ledger schema, the lease and the scheduler start, so an underestimate).
    """
    if any("clock.ready" in path.read_text() for path in (REPO / "dynoclock").rglob("*.py")):
        return READY, ""
    return START, "this clock prints no clock.ready: time-to-ready measured to clock.start (an underestimate)"


# ---- /proc --------------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants: ``run`` is a supervisor with the scheduler as its child (and, with
    ``isolate: process``, worker processes below that), so every figure counts the whole tree."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _stat_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree (all threads, dead ones too), in seconds (resolution 1/CLK_TCK)."""
    total = 0.0
    for one in tree(pid):
        with contextlib.suppress(OSError):
            total += _stat_cpu(one)
    return total


def _tasks(pid: int) -> list[Path]:
    out: list[Path] = []
    for one in tree(pid):
        with contextlib.suppress(OSError):
            out.extend(Path(f"/proc/{one}/task").iterdir())
    return out


def _on_cpu_ns(task: Path) -> int:
    return int((task / "schedstat").read_text().split()[0])


def _switches(task: Path) -> int:
    lines = (task / "status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))


def thread_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds summed over the tree's live threads (/proc/PID/task/*/schedstat): finer than utime+stime."""
    total = 0
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            total += _on_cpu_ns(task)
    return total


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches summed over the tree's live threads: each wakeup counts."""
    total = 0
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            total += _switches(task)
    return total


def threads(pid: int) -> dict[str, tuple[str, int, int]]:
    """Per live thread of the tree ("pid/tid"): its name (/proc/.../comm), on-CPU ns and context switches."""
    out: dict[str, tuple[str, int, int]] = {}
    for task in _tasks(pid):
        with contextlib.suppress(OSError):  # the thread ended between the listing and the read
            out[f"{task.parent.parent.name}/{task.name}"] = (
                (task / "comm").read_text().strip(),
                _on_cpu_ns(task),
                _switches(task),
            )
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS from /proc/PID/status, in MB, summed over the tree (a sum of peaks: an upper
    bound of the tree's peak)."""
    out = {"VmHWM": 0.0, "VmRSS": 0.0}
    for one in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] += int(line.split()[1]) / 1024
    return out


def thread_count(pid: int) -> int:
    return len(_tasks(pid))
