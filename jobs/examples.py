"""Example jobs used by the shipped schedule.yaml; copy one to start your own."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("jobs.examples")


def heartbeat(run: Any = None) -> str:
    """Proves the clock is alive: logs one line per run. ``run`` is the run's context."""
    slot = getattr(run, "scheduled_for", None)
    return f"heartbeat for {slot.isoformat() if slot else 'a manual run'}"


def add(a: int, b: int) -> int:
    """A task for worker dynos: enqueue it with ``enqueue: {func: jobs.examples.add, args: [1, 2]}``."""
    return a + b
