"""The clock process's allocator setting: large blocks are mapped on their own and go back to the system when freed.

glibc's malloc serves a block of ``M_MMAP_THRESHOLD`` bytes or more (128 KiB) with a mapping of its own, unmapped
when it is freed; but by default the threshold rises to the size of the largest such block freed so far. A clock's
start-up frees a few large ones early (the schedule file's text, a 10,000-job dict), and then its later large
blocks (the first takeover's JSON texts and query results, APScheduler's job index as it grows) came from the heap,
which they left fragmented: about 1 MB of a 10,000-job clock's memory, kept as long as it runs. Setting the
threshold fixes it where it starts. Linux with glibc only; elsewhere (musl's mallopt does nothing) nothing changes.
"""

from __future__ import annotations

import sys

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept from moving


def fix_mmap_threshold(libc: object | None = None) -> bool:
    """Keep malloc's mmap threshold at 128 KiB for the rest of the process; whether the C library took it."""
    if libc is None:
        if not sys.platform.startswith("linux"):
            return False
        import ctypes

        try:
            libc = ctypes.CDLL(None)
        except OSError:
            return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    try:
        return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, TypeError, ValueError):
        return False
