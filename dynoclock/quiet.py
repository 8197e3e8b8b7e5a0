"""Work that can wait gives way while runs are starting.

All of the clock's threads share one interpreter lock. In a burst (1,000 runs due in one second), the history
writer (state/writer.py) and the log writer (observe/logs.py) competed with the runs' starts for it: half of a
burst's CPU went to rows and lines about runs that had already started, and every start waited its share.
Both now wait, before each batch, until no run has started for ``HOLD`` (at most ``MAX_HOLD`` in all), then
write everything that gathered in one go; a run's start write (``Ledger.begin``), which the run waits for, does
not wait here.

Only the real monotonic time is read (a heuristic about CPU, not about when things happen): a test's fake clock
sees at most ``MAX_HOLD`` of real time pass before a line or a row is written.

In a rush (``RUSH_STARTS`` starts with no pause of ``HOLD``), the interpreter's switch interval goes from
CPython's 5 ms to ``RUSH_SWITCH`` until the starts pause. Hundreds of threads then want the lock at once: runs
woken from their jobs, workers starting the next ones. Each waiting thread asks the one holding the lock to let go
every switch interval, so with 5 ms a worker was pushed off the lock halfway through a start, again and again, and
queued behind all the others to finish it. Measured (bench.burst, 1,000 jobs of 20 ms, 300 workers, 3 runs each,
two rounds, SQLite): the p99 start went from 122.1 and 104.4 ms to 112.1 and 80.4 ms (50 ms for the whole
process: from 126.5 and 97.0 ms to 94.7 and 75.7 ms; on Postgres from 97.7 and 93.0 ms to 90.8 and 89.9 ms).
Outside a rush the interval stays CPython's: a job computing in Python gives the timer its turn within 5 ms.
"""

from __future__ import annotations

import sys
import threading
import time

HOLD = 0.03  # seconds after the latest start before deferred work goes ahead
MAX_HOLD = 0.5  # the longest one batch of deferred work waits, however long the starts go on
RUSH_STARTS = 50  # starts with no pause of HOLD between them that make a rush (a run counts at its hand-over and
# again as its attempt starts: 25 runs handed over together are a rush)
RUSH_SWITCH = 0.05  # seconds: the interpreter's switch interval during a rush
NORMAL_SWITCH = sys.getswitchinterval()  # what it goes back to (CPython's 5 ms, unless the process changed it first)

_last_start = 0.0  # time.monotonic() of the latest start (a float store: atomic under the GIL)
_series = 0  # starts since the last pause of HOLD (races between threads only miscount a rush's size)
_rush = threading.Lock()  # held while a rush lasts, by the thread that ends it


def starting() -> None:
    """A run is starting (the timer hands it over, or its worker starts it)."""
    global _last_start, _series
    now = time.monotonic()
    _series = _series + 1 if now - _last_start < HOLD else 1
    _last_start = now
    if _series >= RUSH_STARTS and not _rush.locked() and _rush.acquire(blocking=False):
        sys.setswitchinterval(RUSH_SWITCH)
        try:
            threading.Thread(target=_end_rush, name="rush", daemon=True).start()
        except BaseException:  # no thread to end it (the process is out of threads): no rush
            sys.setswitchinterval(NORMAL_SWITCH)
            _rush.release()


def _end_rush() -> None:
    """Until the starts pause for HOLD; then the normal switch interval again."""
    try:
        while wait_for_quiet(limit=60.0) >= 60.0:
            pass
    finally:
        sys.setswitchinterval(NORMAL_SWITCH)
        _rush.release()


def wait_for_quiet(limit: float | None = None) -> float:
    """Wait until no run has started for ``HOLD``, or ``limit`` seconds (``MAX_HOLD``) have passed; the seconds
    waited."""
    began = now = time.monotonic()
    end = began + (MAX_HOLD if limit is None else limit)
    while (until := min(_last_start + HOLD, end)) > now:
        time.sleep(until - now)
        now = time.monotonic()
    return now - began
