"""dynoclock: a clock process for PaaS apps that runs every scheduled slot exactly once."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is 1 MB: every process of the clock imports this package, the supervisor too
if TYPE_CHECKING:
    from dynoclock.client import ConfigError, Scheduler, UnknownJob, connect
    from dynoclock.signing import require_signature, verify_signature

__version__ = "0.1.0"

__all__ = ["ConfigError", "Scheduler", "UnknownJob", "__version__", "connect", "require_signature", "verify_signature"]
_CLIENT = ("ConfigError", "Scheduler", "UnknownJob", "connect")
_SIGNING = ("require_signature", "verify_signature")


def __getattr__(name: str) -> object:
    """``dynoclock.connect`` and friends (dynoclock/client.py) and the signature checks (dynoclock/signing.py),
    imported on first use: the clock's own commands, its supervisor first, do not pay for them."""
    if name in _CLIENT:
        from dynoclock import client

        return getattr(client, name)
    if name in _SIGNING:
        from dynoclock import signing

        return getattr(signing, name)
    raise AttributeError(f"module 'dynoclock' has no attribute {name!r}")
