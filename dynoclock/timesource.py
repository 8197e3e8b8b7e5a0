"""The one place the clock reads the real time: a ``Clock`` object handed to every part that needs the time.

Schedule math takes instants as arguments (``schedule/``); everything that must know *now* (the ledger's
timestamps, the runner's start times and retry waits, leadership rounds, housekeeping, timeouts) asks the
``Clock`` it was given. Production passes ``SYSTEM``; tests pass a fake one and move time by hand, so catch-up,
housekeeping, pruning and leadership are tested through public methods without sleeping or patching.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, intervals)."""
        ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)


SYSTEM = SystemClock()
