"""The clock's status page: mount ``make_app()`` in the web app, or run ``python clock.py ui`` alone."""

from __future__ import annotations

import contextlib
import signal
import sys
from types import FrameType

from dynoclock.timesource import SYSTEM, Clock
from dynoclock.ui.access import AuthCallable
from dynoclock.ui.app import StatusApp, make_app

__all__ = ["AuthCallable", "StatusApp", "make_app", "serve"]


def serve(config: str | None, host: str = "127.0.0.1", port: int = 8000, clock: Clock = SYSTEM) -> int:
    """``python clock.py ui``: the status page on its own, for local use; Ctrl-C or SIGTERM stops it (exit 0)."""
    from werkzeug.serving import run_simple

    from dynoclock.config.loader import default_path, load_schedule

    path = config or default_path()
    load_schedule(path, view=True)  # a broken schedule is reported as by `check` (exit 2), not only on the page
    app = make_app(path, clock=clock)
    if not app.access.enabled:
        print("ui: CLOCK_UI_TOKEN is not set: every page answers 403 until it is", file=sys.stderr)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, or SIGTERM above: a clean stop
        run_simple(host, port, app, threaded=True)
    return 0
