"""Imported at start-up by every Python process that has this folder on PYTHONPATH (``bench.threads`` puts it
there for the clock it starts): each thread names its OS thread after its Python name (``prctl(PR_SET_NAME)``,
15 characters), so ``/proc/PID/task/*/comm`` says which thread used the CPU. Linux only; elsewhere it does
nothing. Never imported by the clock itself."""

import contextlib
import ctypes
import threading

PR_SET_NAME = 15

try:
    _prctl = ctypes.CDLL(None).prctl
except (OSError, AttributeError):
    _prctl = None

if _prctl is not None:
    _bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def _named(self: threading.Thread) -> None:
        with contextlib.suppress(Exception):  # naming is only for reading: never stop a thread over it
            _prctl(PR_SET_NAME, self.name[:15].encode(), 0, 0, 0)
        _bootstrap(self)

    threading.Thread._bootstrap_inner = _named  # type: ignore[attr-defined]
