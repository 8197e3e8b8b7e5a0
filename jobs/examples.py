"""Example jobs used by the shipped schedule.yaml; copy one to start your own."""

from __future__ import annotations

import logging

from dynoclock.actions.base import RunContext

log = logging.getLogger("jobs.examples")


def heartbeat(run: RunContext | None = None) -> str:
    """Proves the clock is alive: logs one line per run. ``run`` is the run's context."""
    slot = run.scheduled_for if run is not None else None
    return f"heartbeat for {slot.isoformat() if slot else 'a manual run'}"


def add(a: int, b: int) -> int:
    """A task for worker dynos: enqueue it with ``enqueue: {func: jobs.examples.add, args: [1, 2]}``."""
    return a + b
