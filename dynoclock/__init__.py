"""dynoclock: a clock process for PaaS apps that runs every scheduled slot exactly once."""

__version__ = "0.1.0"

from dynoclock.signing import require_signature, verify_signature

__all__ = ["__version__", "require_signature", "verify_signature"]
