"""Where every run's timeout is enforced: the watchdog.

At an attempt's deadline it cancels the run: the action's own hooks run on the hook threads (kill the process
group, cancel the query, shut the HTTP socket), never on the timer's thread, which starts every run and every
watchdog step, so a hook that blocks delays no other job. A Python function still running STOP_GRACE/2 later
gets an exception (``RunCancelled``, a BaseException) raised in its thread, which stops pure-Python code at its
next line. A worker that still does not come back after STOP_GRACE is written off: its run is reported as timed
out, and the pool starts a fresh thread in its place. The same escalation stops runs cancelled at shutdown or by
``overlap: replace``.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable
from functools import partial

from dynoclock.actions.base import RunCancelled, RunContext
from dynoclock.run.timer import Timer
from dynoclock.timesource import SYSTEM, Clock

STOP_GRACE = 3.0  # seconds a cancelled run gets to stop: hooks first, an exception at half-time, then written off


class Watch:
    """One attempt under the watchdog (one per attempt, on every run's path: slots, no dataclass)."""

    __slots__ = ("__weakref__", "ctx", "done", "ident", "interrupted", "lock", "on_written_off", "written_off")

    def __init__(self, ctx: RunContext, ident: int, on_written_off: Callable[[Watch], None]):
        self.ctx = ctx
        self.ident = ident  # the attempt's thread
        self.on_written_off = on_written_off
        self.done = False
        self.interrupted = False
        self.written_off = False
        self.lock = threading.Lock()

    def finish(self) -> bool:
        """The attempt returned; False if it had been written off already (its result must be ignored)."""
        with self.lock:
            if self.interrupted and not self.done:  # an exception sent but not yet raised must not land later
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), None)
            self.done = True
            return not self.written_off


class Watchdog:
    """Enforces timeouts, and stops cancelled attempts: hooks, then an exception, then writing off."""

    def __init__(self, timer: Timer, clock: Clock = SYSTEM):
        self.timer = timer
        self.clock = clock

    def watch(self, ctx: RunContext, on_written_off: Callable[[Watch], None]) -> Watch:
        """Watch the attempt running in the calling thread, until ``ctx.deadline``."""
        watch = Watch(ctx, threading.get_ident(), on_written_off)
        # The step holds the watch weakly too: the watch holds the context, whose steps would hold the watch, a cycle
        # per attempt (30 objects) that only the cyclic GC frees; in a burst its collections were 15% of the CPU.
        ctx.on_cancel_step(partial(_escalate_if_running, weakref.ref(watch), self))
        # The timer holds the deadline until it comes, however soon the attempt ends: a weak reference, so that an
        # attempt over (its context, output tail, closures: ~5 KB) is not kept until its timeout (10,000 one-offs
        # run in a minute would hold ~50 MB for as long as their timeout).
        self.timer.at(ctx.deadline, partial(_time_out, weakref.ref(watch)))
        return watch

    def _escalate(self, watch: Watch) -> None:
        """Cancelled (timeout, shutdown, replaced): the action's own hooks are running on the hook threads; then,
        if it is still there, an exception in its thread (a pure-Python loop stops at its next line); then it is
        written off. Only puts the two steps in the timer: it runs in whatever thread cancelled."""
        now = self.clock.monotonic()
        self.timer.at(now + STOP_GRACE / 2, lambda: self._interrupt(watch))
        self.timer.at(now + STOP_GRACE, lambda: self._write_off(watch))

    def _interrupt(self, watch: Watch) -> None:
        with watch.lock:
            if not watch.done:
                watch.interrupted = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(watch.ident), ctypes.py_object(RunCancelled))

    def _write_off(self, watch: Watch) -> None:
        with watch.lock:
            if watch.done:
                return
            watch.written_off = True
        watch.on_written_off(watch)


def _escalate_if_running(ref: weakref.ReferenceType[Watch], watchdog: Watchdog) -> None:
    """Cancelled: the escalation, unless the attempt is over (its runner holds the watch until it ends)."""
    watch = ref()
    if watch is not None:
        watchdog._escalate(watch)


def _time_out(ref: weakref.ReferenceType[Watch]) -> None:
    """At an attempt's deadline: cancel it if it is still running (its runner holds the watch until it ends)."""
    watch = ref()
    if watch is not None and not watch.done:
        watch.ctx.cancel("timeout")
