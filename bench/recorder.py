"""The job the runtime benchmarks schedule (``python: bench.recorder:record``, args ``[n]``): it records its run,
so that exactly-once and lateness are read from what ran, the same way for the clock and for plain APScheduler."""

from __future__ import annotations

import os
import time
from pathlib import Path


def record(n: int) -> None:
    """Appends ``n <unix time>`` to the file named by $BENCH_RECORD (one O_APPEND write: whole lines, even from
    several threads or processes)."""
    line = f"{n} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["BENCH_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(path: Path) -> list[tuple[int, float]]:
    """The runs recorded: (n, unix time its function started), in the order written."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        n, at = line.split()
        out.append((int(n), float(at)))
    return out
