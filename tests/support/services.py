"""The machine's services (PostgreSQL, Redis, Chromium, openssl): the one rule for a test that cannot have one.

Locally a test whose service is missing is skipped, with the reason. Under ``CI=true`` it fails: CI never
skips a test silently (``.ci/run`` starts the services and sets ``CI=true``).
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the suite runs as CI (``CI=true``): every test runs, none is skipped for a missing service."""
    return os.environ.get("CI") == "true"


def unavailable(what: str, reason: str) -> NoReturn:
    """``what`` (a service or tool) cannot be had, because ``reason``: skip the test, or fail it under CI=true."""
    message = f"{what} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A port nothing listens on (a moment ago): for a server that is down, or one to start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
