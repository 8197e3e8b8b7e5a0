"""Job functions the benchmark schedules call (``python: bench.jobs:io_20ms``); run the clock with cwd=repo."""

from __future__ import annotations

import time


def io_20ms() -> None:
    """20 ms of I/O-like work: the thread sleeps, releasing the GIL as a socket read would."""
    time.sleep(0.020)


def noop() -> None:
    """Nothing at all: measures the scheduler, not the job."""
