"""dynoclock: a clock process for PaaS apps that runs every scheduled slot exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynoclock.client import ConfigError, Scheduler, UnknownJob, connect

__version__ = "0.1.0"

from dynoclock.signing import require_signature, verify_signature

__all__ = ["ConfigError", "Scheduler", "UnknownJob", "__version__", "connect", "require_signature", "verify_signature"]
_CLIENT = ("ConfigError", "Scheduler", "UnknownJob", "connect")


def __getattr__(name: str) -> object:
    """``dynoclock.connect`` and friends (dynoclock/client.py), imported on first use: the clock's own
    commands do not pay for them."""
    if name in _CLIENT:
        from dynoclock import client

        return getattr(client, name)
    raise AttributeError(f"module 'dynoclock' has no attribute {name!r}")
