"""The threads that run jobs: up to ``workers`` long-lived threads taking runs from one queue.

Runs wait for their start in the timer's heap (run/timer.py), then queue here. A job runs in its worker
thread; when the watchdog (run/watchdog.py) gives up on a job that will not stop, its worker is written off
and a fresh thread takes its place, so a hung job never shrinks the pool. A worker that has had nothing to do
for ``IDLE_EXIT`` ends: after a burst, the clock does not keep hundreds of idle threads (and their stacks)
until the next one, which starts them again ahead of its runs (``prestart``).

Why 300 by default (``workers``): a burst of 1,000 jobs of 20 ms due together starts in four waves, and the
threads woken at once are few enough that the interpreter lock is not passed among hundreds of them. Measured on
a 2-core VM: with 200 the burst's median start was 57 ms late; with 300, 45-48 ms; with 400 the median was lower
but the last starts came 30 ms later (bench/README.md).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable

Task = Callable[[], None]
IDLE_EXIT = 600.0  # seconds a worker waits for a task before it ends


class WorkerPool:
    """Up to ``size`` long-lived threads taking tasks from one queue, started as the load needs them."""

    def __init__(self, size: int, name: str = "worker", idle_exit: float = IDLE_EXIT):
        self.size = size
        self.name = name
        self.idle_exit = idle_exit
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
        """Have ``count`` workers (up to the size), the missing ones started now, so that runs about to fall due
        do not wait on thread creation; they stay, idle, for the next ones (up to ``idle_exit``)."""
        with self._lock:
            count = max(0, min(count, self.size) - self._threads)
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
            self._idle += 1
        while True:
            try:
                task = self._queue.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    # A task put since the wait ended counted this worker as idle (``submit`` grows the pool only
                    # for tasks beyond the idle workers): it leaves only if the others are enough for those queued.
                    if self._queued < self._idle:
                        self._idle -= 1
                        self._threads -= 1
                        self._idents.discard(me)
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            with contextlib.suppress(BaseException):  # a task reports its own errors; the worker lives on
                task()
            with self._lock:
                if me in self._written_off:  # came back after being written off: a replacement exists
                    self._written_off.discard(me)
                    return
                self._idle += 1
