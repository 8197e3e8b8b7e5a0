"""SQLite: the kernel says when the write-ahead log changes (Linux inotify), so that an idle leader need not poll.

Every commit to a database in WAL mode, by any process on the machine (WAL works only there), writes the
``-wal`` file beside it; an ``IN_MODIFY`` watch on it reads as ready when one did. The leader's own heartbeat
writes it every few seconds too: that is how the caller (daemon/apijobs.py) knows the watch works, and it polls as
before while no event came for longer than that. None where there is no inotify (not Linux) or no WAL file.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys

IN_MODIFY, IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED = 0x2, 0x400, 0x800, 0x8000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class WalWatch:
    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> bool:
        """Read the events waiting; False once the file is gone or moved (the watch is over)."""
        alive = True
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return alive
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                    alive = False
                offset += _EVENT.size + length

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def watch_wal(database: str | None) -> WalWatch | None:
    """A watch on ``database``'s WAL file, or None where there can be none."""
    if not database or not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        mask = IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF
        if libc.inotify_add_watch(fd, os.fsencode(f"{database}-wal"), mask) < 0:
            os.close(fd)
            return None
        return WalWatch(fd)
    except (OSError, AttributeError):
        return None
