"""Calls tasks at monotonic instants from one thread: runs wait in its heap, not in threads."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time

from dynoclock.run.workers import Task


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
