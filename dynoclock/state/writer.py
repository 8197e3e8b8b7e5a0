"""Writes run progress (started, finished) to the ledger from a thread of its own, in batches.

The claim is the only ledger write a run waits for: it decides whether the run
happens. What follows (started_at, the outcome) is history, so it is queued
with the instant it happened and written in one transaction per batch: a burst
of 1,000 runs costs a handful of commits instead of 2,000. If the database is
away, the queue waits and retries; at shutdown it is flushed within a bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from dynoclock.observe.logs import EventLog, short_error
from dynoclock.state.ledger import Ledger

BATCH_WINDOW = 0.05  # seconds the writer lets updates gather before a commit
MAX_QUEUED = 100_000  # updates kept while the database is away; older ones are dropped (and said so)


class Recorder:
    def __init__(self, ledger: Ledger, events: EventLog):
        self.ledger = ledger
        self.events = events
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def started(self, run_id: str, attempt: int, clock: str, at: datetime) -> None:
        self._put(run_id, {"status": "running", "attempt": attempt, "clock": clock, "started_at": at,
                           "finished_at": None, "error": None, "duration_ms": None})  # fmt: skip

    def finished(self, run_id: str, status: str, error: str | None, duration_ms: int | None, at: datetime) -> None:
        self._put(run_id, {"status": status, "error": error or None, "duration_ms": duration_ms, "finished_at": at})

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is written (or ``timeout`` passes); True if it all was."""
        end = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def _put(self, run_id: str, values: dict[str, Any]) -> None:
        with self._cond:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.events.emit("ledger.dropped", level="warning", note="history queue full; oldest update dropped")
            self._queue.append((run_id, values))
            if len(self._queue) == 1:  # wake the writer once per batch, not once per update
                self._cond.notify_all()

    def _loop(self) -> None:
        delay = 0.5
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
            time.sleep(BATCH_WINDOW)  # let a burst gather: one commit for many runs
            with self._cond:
                batch = list(self._queue)
                self._queue.clear()
                self._busy = True
            try:
                self.ledger.update_runs(_merge(batch))
                delay = 0.5
                if self._failing:
                    self._failing = False
                    self.events.emit("ledger.reachable", note="queued history written")
            except Exception as exc:
                with self._cond:
                    self._queue.extendleft(reversed(batch))  # keep order; try again
                if not self._failing:
                    self._failing = True
                    self.events.emit("ledger.error", level="warning", operation="record", error=short_error(exc),
                                     queued=len(batch), note="history kept in memory and retried")  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _merge(batch: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One update per run: later values win (started then finished in one batch gives the outcome)."""
    merged: dict[str, dict[str, Any]] = {}
    for run_id, values in batch:
        merged.setdefault(run_id, {}).update(values)
    return merged
