"""Keeping secrets out of logs, history and error messages."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from dynoclock.config.envvars import SECRET_NAME

MASK = "***"
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s/]+)(@)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``postgres://user:pw@host/db`` -> ``postgres://user:***@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:{MASK}@{netloc[1]}"))


class Redactor:
    """Masks known secret values and URL passwords in any text."""

    def __init__(self) -> None:
        self._secrets: list[str] = []
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            # Longest first, so a secret containing another is masked whole. Very short values
            # would mask ordinary words, so they are not treated as secrets.
            merged = set(self._secrets) | {s for s in secrets if len(s) >= 4}
            self._secrets = sorted(merged, key=len, reverse=True)

    def add_from_env(self, env: dict[str, str] | None = None) -> None:
        """Every value of a secret-named environment variable (CLOCK_TOKEN, AWS_SECRET_ACCESS_KEY, ...)."""
        env = dict(os.environ) if env is None else env
        self.add(v for k, v in env.items() if SECRET_NAME.search(k) and v)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" not in text:  # the common case, and a cheap test: no URL, no password in one
            return text
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)


redact = Redactor()
