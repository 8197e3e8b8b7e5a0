"""A clock the test moves by hand: ``advance()`` moves both ``now`` and ``monotonic`` and wakes waiters.

``wait`` blocks until the test moves time past its timeout (or the event is set); ``sleep`` moves time itself,
as a short pause in a background loop (the history writer's batch window, a retry's pause) would.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._cond = threading.Condition()

    def now(self) -> datetime:
        with self._cond:
            return self._now

    def monotonic(self) -> float:
        with self._cond:
            return self._mono

    def advance(self, seconds: float | timedelta) -> None:
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        with self._cond:
            self._now += timedelta(seconds=step)
            self._mono += step
            self._cond.notify_all()

    def set(self, moment: datetime) -> None:
        """Jump ``now`` to ``moment`` (monotonic moves by the same amount; never backwards)."""
        with self._cond:
            step = max(0.0, (moment - self._now).total_seconds())
            self._now = moment
            self._mono += step
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Block until ``event`` is set or fake time passes ``timeout`` (checks the event every 10 ms of real time)."""
        with self._cond:
            end = None if timeout is None else self._mono + timeout
            while not event.is_set():
                if end is not None and self._mono >= end:
                    return False
                self._cond.wait(0.01)
        return True
