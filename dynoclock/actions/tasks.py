"""What ``celery:`` and ``enqueue:`` share: both hand a task, by name, to the app's workers through a broker.

The task's options (``args``, ``kwargs``, ``queue``), where the broker is (the action's own URL, else an
environment variable), one client per broker URL, and how a failure to send is worded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from dynoclock.actions.base import JobFailed
from dynoclock.config.values import Parser, as_mapping, as_nonempty_str, as_tuple
from dynoclock.observe.redact import redact_url

K = TypeVar("K")
V = TypeVar("V")

TASK_PARSERS: dict[str, Parser] = {
    "args": as_tuple,
    "kwargs": as_mapping,
    "queue": as_nonempty_str,
}
EXAMPLE_TASK = "app.tasks.export_posts"


def broker_url(own: str | None, env: Mapping[str, str], *names: str) -> str | None:
    """The action's own URL, else the first of the variables ``names`` set (non-empty) in ``env``."""
    return own or next((env[name] for name in names if env.get(name)), None)


def send_failed(what: str, exc: Exception) -> JobFailed:
    """``<what> failed: ConnectionError: ...``, bounded, without a password from a URL in the message."""
    return JobFailed(f"{what} failed: {type(exc).__name__}: {redact_url(str(exc))}"[:300])


class Clients(Generic[K, V]):
    """One client (with its connection pool) per key, made on first use and shared by every run."""

    def __init__(self) -> None:
        self._clients: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = make()
            return client
