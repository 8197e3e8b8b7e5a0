"""Signed calls: the clock signs what an ``http:`` job sends (``sign:``), and the app checks it came from the clock.

``X-Clock-Signature: t=<unix time>,v1=<hex>`` where the hex is HMAC-SHA256 over ``"<t>." + body`` with the
secret. A job with ``sign: [new, old]`` sends one ``v1=`` per secret, so the app's secret can be rotated
without a moment when calls are refused. The app side:

- ``verify_signature(secret, header, body)``: True or False, never an exception;
- ``require_signature()``: a Flask view decorator (401 when the call is not signed by the clock);
- ``SignatureMiddleware(app, secret, paths=("/tasks/",))``: the same for any WSGI app, by path prefix.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dynoclock.timesource import SYSTEM

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SIGNATURE_HEADER = "X-Clock-Signature"
SECRET_ENV = "CLOCK_SIGNING_SECRET"
TOLERANCE = 300  # seconds a signature is good for, either side of now: the replay window
MAX_HEADER = 4096  # a longer header is not one the clock sent
MAX_BODY = 10 * 1024 * 1024  # what SignatureMiddleware reads at most before it answers 413
_HEX = re.compile(r"[0-9a-f]{64}")

Secret = str | bytes
Secrets = Secret | Sequence[Secret]
F = TypeVar("F", bound=Callable[..., Any])


def _secrets(secrets: Secrets) -> list[bytes]:
    items = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    return [s.encode() if isinstance(s, str) else bytes(s) for s in items if s]


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secrets: Secrets, timestamp: int, body: bytes | str) -> str:
    """The header value for ``body`` sent at ``timestamp``: ``t=<t>,v1=<hex>``, one ``v1=`` per secret."""
    data = body.encode() if isinstance(body, str) else body
    keys = _secrets(secrets)
    if not keys:
        raise ValueError("no signing secret")
    return ",".join([f"t={timestamp}", *(f"v1={_mac(key, timestamp, data)}" for key in keys)])


def verify_signature(
    secret: Secrets,
    header: str | bytes | None,
    body: bytes | str,
    tolerance: float = TOLERANCE,
    now: float | datetime | None = None,
) -> bool:
    """Whether ``header`` (the X-Clock-Signature value) signs ``body`` with ``secret`` (or any of a list of
    secrets, for rotation), at a time within ``tolerance`` seconds of ``now`` (default: the current time).
    Malformed, missing or oversized headers give False; nothing here raises on what a caller sent."""
    try:
        if header is None or not isinstance(body, bytes | str):
            return False
        text = header.decode("ascii") if isinstance(header, bytes) else header
        if len(text) > MAX_HEADER or not text.isascii():
            return False
        stamp, macs = None, []
        for part in text.split(","):
            name, eq, value = part.strip().partition("=")
            if not eq:
                continue
            if name == "t":
                if stamp is not None or not (value.isdigit() and len(value) <= 12):
                    return False  # two timestamps, or one that is not a plain number of seconds
                stamp = int(value)
            elif name == "v1" and _HEX.fullmatch(value):
                macs.append(value)
        keys = _secrets(secret)
        if stamp is None or not macs or not keys:
            return False
        moment = SYSTEM.now().timestamp() if now is None else now.timestamp() if isinstance(now, datetime) else now
        if abs(moment - stamp) > tolerance:
            return False
        data = body.encode() if isinstance(body, str) else body
        # Every comparison is made (no early exit): the time taken does not tell which secret matched.
        found = False
        for key in keys:
            expected = _mac(key, stamp, data).encode()
            for mac in macs:
                found |= hmac.compare_digest(expected, mac.encode())
        return found
    except (UnicodeError, ValueError, TypeError, AttributeError):
        return False


def _secret_from(secret: Secrets | None, secret_env: str) -> Secrets:
    if secret is not None:
        return secret
    value = os.environ.get(secret_env, "")
    if not value:
        raise RuntimeError(f"{secret_env} is not set: the clock's signed calls cannot be checked")
    return value


def require_signature(
    secret_env: str = SECRET_ENV, secret: Secrets | None = None, tolerance: float = TOLERANCE
) -> Callable[[F], F]:
    """A Flask view decorator: the view runs only for a call the clock signed, others get 401.

    The secret is ``secret`` if given, else the environment variable ``secret_env``, read at each request."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            from flask import abort, request

            key = _secret_from(secret, secret_env)
            if not verify_signature(key, request.headers.get(SIGNATURE_HEADER), request.get_data(), tolerance):
                abort(401)
            return view(*args, **kwargs)

        return cast(F, checked)

    return decorate


class SignatureMiddleware:
    """WSGI middleware: requests under ``paths`` (prefixes of the path) must be signed by the clock, or get 401.

    ``secret`` as for ``verify_signature``; None reads ``secret_env`` at each request. The body is read (at most
    ``max_body`` bytes, else 413) and handed on to the app unchanged."""

    def __init__(
        self,
        app: WSGIApplication,
        secret: Secrets | None = None,
        paths: Iterable[str] = ("/tasks/",),
        tolerance: float = TOLERANCE,
        secret_env: str = SECRET_ENV,
        max_body: int = MAX_BODY,
    ):
        self.app = app
        self.secret = secret
        self.paths = tuple(paths)
        self.tolerance = tolerance
        self.secret_env = secret_env
        self.max_body = max_body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if not path.startswith(self.paths):
            return self.app(environ, start_response)
        from werkzeug.exceptions import RequestEntityTooLarge
        from werkzeug.wsgi import get_input_stream

        key = _secret_from(self.secret, self.secret_env)
        try:
            stream = get_input_stream(environ, max_content_length=self.max_body)
            body = stream.read(self.max_body + 1)
        except RequestEntityTooLarge:
            body = b"x" * (self.max_body + 1)
        if len(body) > self.max_body:
            return _plain(start_response, "413 Content Too Large", "request body too large\n")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("wsgi.input_terminated", None)
        if not verify_signature(key, environ.get("HTTP_X_CLOCK_SIGNATURE"), body, self.tolerance):
            return _plain(start_response, "401 Unauthorized", "missing or invalid X-Clock-Signature\n")
        return self.app(environ, start_response)


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
