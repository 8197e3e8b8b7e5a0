"""Keeping secrets out of logs, history and error messages."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from dynoclock.config.envvars import SECRET_NAME

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary words
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
        # Every proper start of a secret (MIN_SECRET characters or more), by its last MIN_SECRET characters.
        self._starts: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            # Longest first, so a secret containing another is masked whole.
            merged = set(self._secrets) | {s for s in secrets if len(s) >= MIN_SECRET}
            starts: dict[str, list[tuple[int, str]]] = {}
            for secret in merged:
                for end in range(MIN_SECRET, len(secret)):
                    starts.setdefault(secret[end - MIN_SECRET : end], []).append((end, secret))
            for found in starts.values():
                found.sort(reverse=True)  # the longest start first
            self._secrets, self._starts = sorted(merged, key=len, reverse=True), starts

    def add_from_env(self, env: dict[str, str] | None = None) -> None:
        """Every value of a secret-named environment variable (CLOCK_TOKEN, AWS_SECRET_ACCESS_KEY, ...)."""
        env = dict(os.environ) if env is None else env
        self.add(v for k, v in env.items() if SECRET_NAME.search(k) and v)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = self._cut_at_end(text)
        if "://" not in text:  # the common case, and a cheap test: no URL, no password in one
            return text
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)

    def _cut_at_end(self, text: str) -> str:
        """A text cut short (an error page's first 300 characters) may end inside a secret: mask that start of
        it too, when it is MIN_SECRET characters or more."""
        for end, secret in self._starts.get(text[-MIN_SECRET:], ()):
            if text.endswith(secret[:end]):
                return text[:-end] + MASK
        return text


redact = Redactor()
