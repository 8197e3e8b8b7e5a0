"""dynoclock: a clock process for PaaS apps that runs every scheduled slot exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynoclock.client import ConfigError, Scheduler, UnknownJob, connect

__version__ = "0.1.0"
__all__ = ["ConfigError", "Scheduler", "UnknownJob", "connect"]


def __getattr__(name: str) -> Any:
    """``dynoclock.connect`` and friends (dynoclock/client.py), imported on first use: the clock's own
    commands do not pay for them."""
    if name in __all__:
        from dynoclock import client

        return getattr(client, name)
    raise AttributeError(f"module 'dynoclock' has no attribute {name!r}")
