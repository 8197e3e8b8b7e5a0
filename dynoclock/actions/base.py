"""The small interface every action implements, and what a running action knows about its run.

An action kind is a module (``actions/http.py``...) with ``JOB_KEYS`` and ``parse`` (``ActionKind``); what
``parse`` returns is the job's ``Action``: ``run(ctx) -> detail``, raising JobFailed on failure, and
``environment_problem(env)``, what ``check`` reports before any job runs.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

from dynoclock.config.durations import format_duration
from dynoclock.observe.timefmt import iso_utc
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from dynoclock.config.problems import Report
    from dynoclock.config.source import Path


class JobFailed(Exception):
    """A run failed; the message uses the schedule's own words (``expect_status=2xx, got 503``)."""


class JobTimeout(JobFailed):
    """The run outlived its ``timeout``."""

    def __init__(self, timeout: timedelta):
        super().__init__(f"timeout={format_duration(timeout)} exceeded")


class Action(Protocol):
    """What a job does, parsed and validated from its schedule entry (``HttpAction``, ``SqlAction``...)."""

    def run(self, ctx: RunContext) -> str | None:
        """Do it, within ``ctx``'s timeout; a short detail for the log (``status=200 bytes=12``), or raise JobFailed."""
        ...

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        """What this environment lacks for the action to run (a module, a program, a URL), or None."""
        ...


class ActionKind(Protocol):
    """An action module, keyed in ``actions.KINDS`` by the job key that names it (``http:``, ``sql:``...)."""

    JOB_KEYS: tuple[str, ...]  # job-level options the action reads (``env`` for command...)

    def parse(self, report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> Action | None:
        """The action for ``value`` (at ``path``) and ``extras`` (its JOB_KEYS: value and where it came from),
        or None after reporting every problem in it."""
        ...


class RunCancelled(BaseException):
    """Raised inside a Python job's thread when its run is cancelled; a BaseException so
    that a job's own ``except Exception`` does not swallow it."""


class HookThreads:
    """Runs cancel hooks off the cancelling thread, on at most ``limit`` threads started as hooks come and ended
    when none wait. A hook that never returns keeps its thread; once ``limit`` are stuck, later hooks wait in
    the queue (the watchdog still stops their runs), so stuck hooks never pile up threads without bound."""

    def __init__(self, limit: int = 8, name: str = "cancel-hooks"):
        self.limit = limit
        self.name = name
        self._queue: deque[list[Callable[[], None]]] = deque()  # each entry: one run's hooks, in order
        self._lock = threading.Lock()
        self._threads = 0
        self._counter = itertools.count(1)

    def submit(self, hooks: list[Callable[[], None]]) -> None:
        """Run ``hooks`` one after another on a hook thread; returns at once."""
        with self._lock:
            self._queue.append(hooks)
            start = self._threads < self.limit
            if start:
                self._threads += 1
        if start:
            threading.Thread(target=self._work, name=f"{self.name}-{next(self._counter)}", daemon=True).start()

    def threads(self) -> int:
        """Hook threads alive now (running a hook, or about to look for one)."""
        with self._lock:
            return self._threads

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._threads -= 1
                    return
                hooks = self._queue.popleft()
            for hook in hooks:
                _quietly(hook)


HOOKS = HookThreads()  # one per process: every run's cancel hooks


def _no_output(stream: str, line: str) -> None:
    """A run's output when nobody listens."""


class RunContext:
    """What a running action knows about its run; a Python job may take it as its ``run`` parameter.

    One is made per attempt, on every run's path: a class with slots, and its ``cancelled`` event made only when
    something asks for it (most runs are never cancelled, and few wait on it)."""

    __slots__ = (
        "_cancelled",
        "_hooks",
        "_lock",
        "_steps",
        "attempt",
        "cancel_reason",
        "clock",
        "deadline",
        "hook_threads",
        "job",
        "output",
        "run_id",
        "scheduled_for",
        "timeout",
    )  # fmt: skip

    def __init__(
        self,
        job: str,
        scheduled_for: datetime,
        run_id: str,
        attempt: int,
        timeout: timedelta,
        deadline: float = 0.0,  # clock.monotonic() at which the run times out (0: timeout from now)
        output: Callable[[str, str], None] = _no_output,
        clock: Clock = SYSTEM,  # what the action asks for the time, and waits with
        hook_threads: HookThreads | None = None,  # where cancel hooks run (None: the process's HOOKS)
    ):
        self.job = job
        self.scheduled_for = scheduled_for
        self.run_id = run_id
        self.attempt = attempt
        self.timeout = timeout
        self.deadline = deadline or clock.monotonic() + timeout.total_seconds()
        self.output = output
        self.cancel_reason: str | None = None  # timeout | shutdown | replaced; set once, when cancelled
        self.clock = clock
        self.hook_threads = hook_threads or HOOKS
        self._cancelled: threading.Event | None = None
        self._hooks: list[Callable[[], None]] = []
        self._steps: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"RunContext(job={self.job!r}, scheduled_for={self.scheduled_for!r}, run_id={self.run_id!r}, "
                f"attempt={self.attempt}, timeout={self.timeout!r}, cancel_reason={self.cancel_reason!r})")  # fmt: skip

    @property
    def cancelled(self) -> threading.Event:
        """Set once the run is cancelled (timeout, shutdown, replaced): a job may wait on it."""
        if (event := self._cancelled) is not None:
            return event
        with self._lock:
            if self._cancelled is None:
                self._cancelled = threading.Event()
                if self.cancel_reason is not None:
                    self._cancelled.set()
            return self._cancelled

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Register how to stop this run early (kill a process, cancel a query); runs at once if already cancelled.
        Hooks run on the hook threads (``HookThreads``), never in the thread that cancels: they may block."""
        with self._lock:
            if self.cancel_reason is None:
                self._hooks.append(hook)
                return
        self.hook_threads.submit([hook])

    def on_cancel_step(self, step: Callable[[], None]) -> None:
        """Register a step of the clock's own that never blocks (the watchdog's escalation): it runs in the
        cancelling thread, so it happens even when every hook thread is stuck."""
        with self._lock:
            if self.cancel_reason is None:
                self._steps.append(step)
                return
        _quietly(step)

    def cancel(self, reason: str) -> None:
        """Stop the run: on timeout, at shutdown, or when ``overlap: replace`` starts a newer one. Returns at once:
        the action's hooks are handed to the hook threads (closing a socket another thread reads from, or a
        cancel request to a silent server, would hold the timer, the scheduler or another run's worker)."""
        with self._lock:
            if self.cancel_reason is not None:
                return
            self.cancel_reason = reason
            if self._cancelled is not None:
                self._cancelled.set()
            hooks, self._hooks = self._hooks, []
            steps, self._steps = self._steps, []
        for step in steps:
            _quietly(step)
        if hooks:
            self.hook_threads.submit(hooks)

    @property
    def remaining(self) -> float:
        """Seconds left before the timeout (never negative)."""
        return max(0.0, self.deadline - self.clock.monotonic())

    def check(self) -> None:
        """Raise if the run was cancelled or ran out of time: long actions call this between steps."""
        if self.cancel_reason is not None or self.remaining <= 0:
            raise JobTimeout(self.timeout)

    def env(self) -> dict[str, str]:
        """The CLOCK_* variables a command job sees (and an HTTP job sends as headers)."""
        return {
            "CLOCK_JOB": self.job,
            "CLOCK_SCHEDULED_FOR": iso_utc(self.scheduled_for),
            "CLOCK_RUN_ID": self.run_id,
            "CLOCK_ATTEMPT": str(self.attempt),
        }


def _quietly(hook: Callable[[], None]) -> None:
    with contextlib.suppress(BaseException):  # a process that already exited, a connection already closed
        hook()


A = TypeVar("A")


@functools.lru_cache(maxsize=256)
def shared(kind: Callable[..., A], *fields: str | bool | int | tuple[str, ...] | None) -> A:
    """One ``kind(*fields)`` for the jobs whose action is the same, as triggers are shared (schedule/triggers.py):
    with 10,000 jobs, most repeat a few, and each is kept as long as the clock runs. Actions are frozen and a run
    never changes one. The fields are text, flags and numbers of one type each (the cache would take 1 for True)."""
    return kind(*fields)
