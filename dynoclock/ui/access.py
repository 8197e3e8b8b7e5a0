"""Who may see the status page and who may act on it: tokens, the host app's auth callable, CSRF, Origin.

Roles are ``read`` (see everything) and ``write`` (also run now, pause, resume). A request is identified
by, in order: the host app's ``auth(environ)`` callable, an ``Authorization: Bearer`` token, or the session
cookie the login form sets. The cookie holds an HMAC derived from the token, never the token itself, so it
stays valid across web processes and dies when the token is rotated. With nothing configured the page is off.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

Role = Literal["read", "write"]
AuthCallable = Callable[["WSGIEnvironment"], str | None]

SESSION_COOKIE = "dynoclock_session"
SID_COOKIE = "dynoclock_sid"  # a random per-browser id; CSRF tokens are bound to it
SESSION_MAX_AGE = 14 * 24 * 3600
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class Identity:
    role: Role
    credential: str  # what CSRF tokens are bound to: a session value, or "app:<role>"
    via: str  # token | bearer | app


class Access:
    """The configured ways in, and the checks every request goes through."""

    def __init__(
        self,
        token: str | None = None,
        read_token: str | None = None,
        auth: AuthCallable | None = None,
        secret: str | None = None,
    ):
        self.tokens: list[tuple[bytes, Role]] = []
        if token:
            self.tokens.append((token.encode(), "write"))
        if read_token:
            self.tokens.append((read_token.encode(), "read"))
        self.auth = auth
        # CSRF tokens must verify in every web process: derive the server secret from what they all share.
        if secret:
            key = secret.encode()
        elif self.tokens:
            key = hashlib.sha256(b"dynoclock-ui-csrf\0" + b"\0".join(t for t, _ in self.tokens)).digest()
        else:  # an auth callable alone: per process unless CLOCK_UI_SECRET is set (see README)
            key = secrets.token_bytes(32)
        self._secret = key

    @classmethod
    def from_env(
        cls, token: str | None, read_token: str | None, auth: AuthCallable | None, env: dict[str, str] | None = None
    ) -> Access:
        env = dict(os.environ) if env is None else env
        return cls(
            token if token is not None else env.get("CLOCK_UI_TOKEN"),
            read_token if read_token is not None else env.get("CLOCK_UI_READ_TOKEN"),
            auth,
            env.get("CLOCK_UI_SECRET"),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or self.auth is not None

    @property
    def has_tokens(self) -> bool:
        """Whether the login form can let anyone in."""
        return bool(self.tokens)

    # ---- identifying a request -------------------------------------------------------------

    def check_token(self, presented: str) -> Role | None:
        """The role of a presented token, compared in constant time against every configured one."""
        found: Role | None = None
        for token, role in self.tokens:
            if hmac.compare_digest(presented.encode(), token) and found is None:
                found = role
        return found

    def session_value(self, role: Role) -> str:
        """The cookie value for a role: an HMAC keyed by that role's token (rotating the token ends sessions)."""
        token = next(t for t, r in self.tokens if r == role)
        digest = hmac.new(hashlib.sha256(token).digest(), b"dynoclock-ui-session", hashlib.sha256).hexdigest()
        return f"{role[0]}.{digest}"

    def identify(self, request: Request) -> Identity | None:
        if self.auth is not None:
            role = self.auth(request.environ)
            if role in ("read", "write"):
                return Identity(role, f"app:{role}", "app")  # type: ignore[arg-type]
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            role = self.check_token(header[7:].strip())
            return Identity(role, self.session_value(role), "bearer") if role else None
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            for _, role in self.tokens:
                if hmac.compare_digest(cookie.encode(), self.session_value(role).encode()):
                    return Identity(role, cookie, "token")
        return None

    def log_in(self, response: Response, request: Request, role: Role) -> None:
        response.set_cookie(
            SESSION_COOKIE, self.session_value(role), max_age=SESSION_MAX_AGE, path=cookie_path(request),
            secure=is_https(request), httponly=True, samesite="Strict",
        )  # fmt: skip

    def log_out(self, response: Response, request: Request) -> None:
        response.delete_cookie(SESSION_COOKIE, path=cookie_path(request), httponly=True, samesite="Strict")

    # ---- CSRF --------------------------------------------------------------------------------

    def csrf_token(self, sid: str, credential: str) -> str:
        """HMAC of (browser id, credential) with the server secret: valid only for this browser and login."""
        return hmac.new(self._secret, f"{sid}|{credential}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, presented: str | None, sid: str, credential: str) -> bool:
        expected = self.csrf_token(sid, credential)
        return bool(presented) and hmac.compare_digest(str(presented).encode(), expected.encode())


def browser_id(request: Request) -> tuple[str, bool]:
    """This browser's random id from its cookie, or a new one; and whether it is new (to be set)."""
    sid = request.cookies.get(SID_COOKIE, "")
    if len(sid) == 32 and all(c in "0123456789abcdef" for c in sid):
        return sid, False
    if request.method == "POST" or request.headers.get("Authorization"):
        return "", False  # a POST without it (or an API client) gets no new id: its CSRF check binds to ""
    return secrets.token_hex(16), True


def set_browser_id(response: Response, request: Request, sid: str) -> None:
    response.set_cookie(
        SID_COOKIE, sid, path=cookie_path(request), secure=is_https(request), httponly=True, samesite="Strict"
    )


def same_origin(request: Request) -> bool:
    """False when the Origin header names another host (or is opaque, "null"); no Origin header passes."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    return _host_port(parts.netloc, parts.scheme) == _host_port(request.host, parts.scheme)


def _host_port(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(f":{default}"):
        netloc = netloc[: -len(default) - 1]
    return netloc


def cookie_path(request: Request) -> str:
    """Cookies belong to the mount point (``/clock/`` inside a Flask app), not to the whole site."""
    return (request.script_root or "") + "/"


def is_https(request: Request) -> bool:
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip() == "https"
