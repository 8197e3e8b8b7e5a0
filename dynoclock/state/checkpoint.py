"""SQLite: the write-ahead log checkpointed from the leader's round, not inside a run's commit.

In WAL mode a commit appends its pages to the ``-wal`` file and, with ``synchronous=NORMAL``, does not wait for the
disk; the disk is flushed only by a checkpoint, which copies the WAL's pages into the database file and syncs both.
By default SQLite runs a checkpoint inside whichever commit takes the WAL past 1,000 pages: a run's claim or its
start write among them, which then waits for the disk (a run late by the disk's flush, 2-3 ms on a quiet disk, a
few hundred on a busy one). The clock daemon turns that off on its state connections (``PRAGMA
wal_autocheckpoint=0``, ``StateDatabase.checkpoint_in_rounds``) and its leader checkpoints after its round, on its
own thread, once the WAL holds as many pages not yet copied: the same writes to the disk, off the runs' path.
Commits go on while a checkpoint copies (WAL mode lets a writer append meanwhile). The app's and the command
line's connections keep SQLite's default, so that the WAL is still checkpointed while no clock runs.

How many pages wait is read from the wal-index (the ``-shm`` file beside the database: the header's ``mxFrame``,
the last page written, and the checkpoint's ``nBackfill``, the last one copied; https://www.sqlite.org/walformat.html).
It is read without a lock: a read torn by a writer is told by its two copies of the header differing and only
moves the checkpoint to the next round. Where the index cannot be read, a checkpoint every FALLBACK_EVERY seconds.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

CHECKPOINT_PAGES = 1000  # SQLite's own default (wal_autocheckpoint): the same checkpoints, made elsewhere
FALLBACK_EVERY = 60.0  # seconds between checkpoints where the wal-index cannot be read
WAL_INDEX_VERSION = 3007000
_HEADER = 48  # bytes of one copy of the wal-index header; two copies, then the checkpoint information
_WORD = struct.Struct("=I")  # native byte order, as SQLite writes the wal-index


def pending_pages(database: str) -> int | None:
    """Pages in ``database``'s WAL not yet copied into it; None if the wal-index cannot be read."""
    try:
        fd = os.open(f"{database}-shm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        head = os.pread(fd, 2 * _HEADER + 4, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(head) < 2 * _HEADER + 4 or head[:_HEADER] != head[_HEADER : 2 * _HEADER]:
        return None  # not made yet, or torn by a writer
    (version,) = _WORD.unpack_from(head, 0)
    if version != WAL_INDEX_VERSION or head[12] != 1:  # isInit
        return None
    (last,) = _WORD.unpack_from(head, 16)  # mxFrame
    (copied,) = _WORD.unpack_from(head, 2 * _HEADER)  # nBackfill
    return max(int(last) - int(copied), 0)


class WalCheckpoints:
    """The leader's checkpoints of one SQLite state database (see the module's docstring)."""

    def __init__(self, database: str, clock: Clock = SYSTEM):
        self.database = database
        self.clock = clock
        self._last = clock.monotonic()

    def due(self) -> bool:
        pending = pending_pages(self.database)
        if pending is None:
            return self.clock.monotonic() - self._last >= FALLBACK_EVERY
        return pending >= CHECKPOINT_PAGES

    def run(self, raw: PoolProxiedConnection) -> None:
        """A passive checkpoint on ``raw`` (no transaction open): copies what no reader still needs, waits for
        nobody. A WAL whose every page was copied starts again from its beginning at the next commit."""
        self._last = self.clock.monotonic()
        cursor = raw.cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
        finally:
            cursor.close()
