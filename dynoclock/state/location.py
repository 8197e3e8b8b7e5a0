"""Where the clock's state lives, and what this clock process is called."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping

DEFAULT_SQLITE = "sqlite:///state/clock.db"


def state_url(env: Mapping[str, str] | None = None) -> str:
    """Where state lives: $CLOCK_DATABASE_URL, else $DATABASE_URL, else an embedded SQLite file."""
    env = os.environ if env is None else env
    return env.get("CLOCK_DATABASE_URL") or env.get("DATABASE_URL") or DEFAULT_SQLITE


def clock_id() -> str:
    """The dyno name on Heroku (clock.1), else host:pid; a short random tag tells apart two processes
    that share a name (Heroku's old and new clock.1 overlap during a restart)."""
    name = os.environ.get("DYNO") or f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}#{uuid.uuid4().hex[:4]}"
