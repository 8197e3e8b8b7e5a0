"""SIGTERM, SIGINT and SIGHUP that arrive before the clock can act on them are held, not fatal.

Heroku sends SIGTERM whenever it restarts a dyno, also one that started a moment ago. Python's default action
kills the process (exit 143, no log line) until a handler is installed, and the clock's own handler comes only
after its imports and the schedule are loaded (about half a second). The entry points call ``hold()`` first
thing; the daemon takes over what was held (``held()``) once its handler is installed, and stops at once with
exit 0; any other command calls ``release()``, which restores the default action and delivers what was held.
"""

from __future__ import annotations

import os
import signal
import time

TYPE_CHECKING = False  # typing itself is 1 MB: the supervisor process imports this module and little else
if TYPE_CHECKING:
    from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: a reload, held too (its default kills)
_held: list[tuple[int, float]] = []  # (signal number, monotonic time it arrived)


def hold() -> None:
    for signum in _SIGNALS:
        signal.signal(signum, _hold)


def held() -> list[tuple[int, float]]:
    return list(_held)


def release() -> None:
    """Back to the default action; a signal held meanwhile is delivered now."""
    for signum in _SIGNALS:
        if signal.getsignal(signum) is _hold:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    if _held:
        os.kill(os.getpid(), _held[0][0])


def _hold(signum: int, frame: FrameType | None) -> None:
    _held.append((signum, time.monotonic()))  # the time every Clock's monotonic() reads (timesource.py)
