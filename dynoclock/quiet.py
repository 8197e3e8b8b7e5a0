"""Work that can wait gives way while runs are starting.

All of the clock's threads share one interpreter lock. In a burst (1,000 runs due in one second), the history
writer (state/writer.py) and the log writer (observe/logs.py) competed with the runs' starts for it: half of a
burst's CPU went to rows and lines about runs that had already started, and every start waited its share.
Both now wait, before each batch, until no run has started for ``HOLD`` (at most ``MAX_HOLD`` in all), then
write everything that gathered in one go; a run's start write (``Ledger.begin``), which the run waits for, does
not wait here.

Only the real monotonic time is read (a heuristic about CPU, not about when things happen): a test's fake clock
sees at most ``MAX_HOLD`` of real time pass before a line or a row is written.
"""

from __future__ import annotations

import time

HOLD = 0.03  # seconds after the latest start before deferred work goes ahead
MAX_HOLD = 0.5  # the longest one batch of deferred work waits, however long the starts go on

_last_start = 0.0  # time.monotonic() of the latest start (a float store: atomic under the GIL)


def starting() -> None:
    """A run is starting (the timer hands it over, or its worker starts it)."""
    global _last_start
    _last_start = time.monotonic()


def wait_for_quiet(limit: float | None = None) -> float:
    """Wait until no run has started for ``HOLD``, or ``limit`` seconds (``MAX_HOLD``) have passed; the seconds
    waited."""
    began = now = time.monotonic()
    end = began + (MAX_HOLD if limit is None else limit)
    while (until := min(_last_start + HOLD, end)) > now:
        time.sleep(until - now)
        now = time.monotonic()
    return now - began
