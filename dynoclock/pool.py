"""The threads that run jobs: a worker pool, a timer that hands runs over at their start time, a watchdog.

A thread per run looks simple, but a burst of 1,000 due runs then means 1,000
threads waking at once and fighting for the GIL: measured, that alone made the
median start 400 ms late. Instead, runs wait in a heap (not in threads) until
their start time, then queue for one of ``workers`` long-lived threads.

A job runs in its worker thread. The watchdog enforces its timeout: at the
deadline it cancels the run (the action's hooks kill its process or cancel its
query); a Python function still running gets an exception raised in its
thread; a worker that still does not come back is written off: its run is
reported as timed out, and a fresh thread takes its place, so a hung job
never shrinks the pool.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .actions.base import RunCancelled, RunContext

Task = Callable[[], None]
STOP_GRACE = 3.0  # seconds a cancelled run gets to stop: hooks first, an exception at half-time, then written off


class WorkerPool:
    """Up to ``size`` long-lived threads taking tasks from one queue, started as the load needs them."""

    def __init__(self, size: int, name: str = "worker"):
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # live workers, written-off ones not counted
        self._idle = 0
        self._queued = 0  # tasks put and not yet taken
        self._written_off: set[int] = set()  # thread idents that must exit when (if) they return
        self._idents: set[int] = set()
        self._counter = itertools.count(1)

    def submit(self, task: Task) -> None:
        with self._lock:
            self._queued += 1
            grow = self._queued > self._idle and self._threads < self.size  # more waiting tasks than free hands
            if grow:
                self._threads += 1
        self._queue.put(task)
        if grow:
            self._start()

    def prestart(self, count: int) -> None:
        """Start ``count`` workers now (idle threads cost no CPU), so a burst does not wait on thread creation."""
        with self._lock:
            count = max(0, min(count, self.size - self._threads))
            self._threads += count
        for _ in range(count):
            self._start()

    def write_off(self, ident: int) -> None:
        """A worker is stuck in a job that cannot be stopped: stop counting it, and start a replacement."""
        with self._lock:
            if ident not in self._idents:
                return  # not one of ours (a foreground `run JOB`)
            self._idents.discard(ident)
            self._written_off.add(ident)
            self._threads -= 1
            replace = self._queued > self._idle
            if replace:
                self._threads += 1
        if replace:
            self._start()

    def _start(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self.name}-{next(self._counter)}", daemon=True)
        thread.start()

    def _work(self) -> None:
        me = threading.get_ident()
        with self._lock:
            self._idents.add(me)
        while True:
            with self._lock:
                self._idle += 1
            task = self._queue.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            with contextlib.suppress(BaseException):  # a task reports its own errors; the worker lives on
                task()
            with self._lock:
                if me in self._written_off:  # came back after being written off: a replacement exists
                    self._written_off.discard(me)
                    return


class Timer:
    """Calls tasks at monotonic instants, from one thread; runs wait here, not in threads of their own."""

    def __init__(self, name: str = "timer"):
        self._heap: list[tuple[float, int, Task]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def at(self, when: float, task: Task) -> None:
        with self._cond:
            entry = (when, next(self._seq), task)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # only a new earliest entry changes how long the timer sleeps
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, task = heapq.heappop(self._heap)
            with contextlib.suppress(Exception):
                task()


@dataclass
class Watch:
    """One attempt under the watchdog."""

    ctx: RunContext
    ident: int
    on_written_off: Callable[[Watch], None]
    done: bool = False
    interrupted: bool = False
    written_off: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self) -> bool:
        """The attempt returned; False if it had been written off already (its result must be ignored)."""
        with self.lock:
            if self.interrupted and not self.done:  # an exception sent but not yet raised must not land later
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), None)
            self.done = True
            return not self.written_off


class Watchdog:
    """Enforces timeouts, and stops cancelled attempts: hooks, then an exception, then writing off."""

    def __init__(self, timer: Timer):
        self.timer = timer

    def watch(self, ctx: RunContext, on_written_off: Callable[[Watch], None]) -> Watch:
        """Watch the attempt running in the calling thread, until ``ctx.deadline``."""
        watch = Watch(ctx, threading.get_ident(), on_written_off)
        ctx.on_cancel(lambda: self._escalate(watch))
        self.timer.at(ctx.deadline, lambda: None if watch.done else ctx.cancel("timeout"))
        return watch

    def _escalate(self, watch: Watch) -> None:
        """Cancelled (timeout, shutdown, replaced): the action's own hooks run now; then, if it is still there,
        an exception in its thread (a pure-Python loop stops at its next line); then it is written off."""
        now = time.monotonic()
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
