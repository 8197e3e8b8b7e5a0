"""``http:`` jobs: call one of the app's endpoints."""

from __future__ import annotations

import json as jsonlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dynoclock import __version__
from dynoclock.actions.base import JobFailed, JobTimeout, RunContext
from dynoclock.config.durations import format_duration
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import (
    Parser,
    as_bool,
    as_duration,
    as_enum,
    as_nonempty_str,
    as_str_map,
    parse_fields,
    show,
)
from dynoclock.jsontypes import JSONValue
from dynoclock.observe.redact import redact_url
from dynoclock.observe.timefmt import iso_utc
from dynoclock.signing import SIGNATURE_HEADER, sign

if TYPE_CHECKING:
    import requests
    import urllib3

JOB_KEYS: tuple[str, ...] = ()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


@dataclass(frozen=True, slots=True)
class HttpAction:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    json: JSONValue = None
    data: str | None = None
    connect_timeout: timedelta = timedelta(seconds=10)
    expect_status: tuple[str, ...] = ("2xx",)
    verify: bool = True
    follow_redirects: bool = False
    sign: tuple[str, ...] | None = None  # one secret, or several while the app rotates its own

    def run(self, ctx: RunContext) -> str:
        """Send the request within the run's timeout; a status outside ``expect_status`` fails the run."""
        body = None
        if self.json is not None:
            body = jsonlib.dumps(self.json, separators=(",", ":")).encode()
        elif self.data is not None:
            body = self.data.encode()
        headers = {
            "User-Agent": f"dynoclock/{__version__}",
            "Idempotency-Key": f"{ctx.job}:{iso_utc(ctx.scheduled_for)}",
            "X-Clock-Job": ctx.job,
            "X-Clock-Scheduled-For": iso_utc(ctx.scheduled_for),
            "X-Clock-Run-Id": ctx.run_id,
            "X-Clock-Attempt": str(ctx.attempt),
        }
        if self.json is not None:
            headers["Content-Type"] = "application/json"
        headers.update(self.headers)
        if self.sign is not None:
            headers[SIGNATURE_HEADER] = sign(self.sign, int(ctx.clock.now().timestamp()), body or b"")
        remaining = max(ctx.remaining, 0.001)
        import requests  # here, not at the top: a clock without http: jobs never loads requests (6 MB, 0.1 s)
        import urllib3

        try:
            response = session().request(
                self.method,
                self.url,
                params=self.params or None,
                data=body,
                headers=headers,
                timeout=(min(self.connect_timeout.total_seconds(), remaining), remaining),
                verify=self.verify,
                allow_redirects=self.follow_redirects,
                stream=True,
            )
        except requests.exceptions.RequestException as exc:
            if ctx.remaining <= 0:  # the socket noticed the run's deadline a moment before the runner did
                raise JobTimeout(ctx.timeout) from None
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                raise JobFailed(f"connect_timeout={format_duration(self.connect_timeout)} exceeded") from None
            raise JobFailed(f"request failed: {_reason(exc)}") from None
        body_reader = _Body(response.raw)
        ctx.on_cancel(body_reader.stop)
        try:
            chunks, size = [], 0
            while chunk := body_reader.read(ctx):
                if size < 4096:
                    chunks.append(chunk)
                size += len(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if ctx.remaining <= 0 or ctx.cancelled.is_set() or isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                raise JobTimeout(ctx.timeout) from None  # a read timeout is the time left: the run's deadline
            raise JobFailed(f"reading the response failed: {_reason(exc)}") from None
        finally:
            response.close()
        status = response.status_code
        if not status_ok(status, self.expect_status):
            text = b"".join(chunks)[:300].decode("utf-8", "replace").strip()
            expected = ",".join(self.expect_status)
            raise JobFailed(f"expect_status={expected}, got {status}" + (f": {text}" if text else ""))
        return f"status={status} bytes={size}"

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        return None  # the URL is known; whether it answers is the run's business


def parse(report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> HttpAction | None:
    fields = parse_fields(report, path, value, PARSERS, "url", "https://app.example.com/tasks/x")
    if isinstance(value, dict) and {"url", "json", "data"} <= value.keys():
        report.error((*path, "data"), "set either 'json' or 'data', not both")
        return None
    return None if fields is None else HttpAction(**fields)


def as_url(value: object) -> str:
    url = as_nonempty_str(value)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise Invalid(f"expected an http:// or https:// URL, got {redact_url(url)!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"expected an http:// or https:// URL, got {redact_url(url)!r}")
    try:
        parts.port  # noqa: B018  (reading it checks it: a port that is not 0-65535 in ASCII digits raises)
    except ValueError:
        raise Invalid(f"expected a port from 0 to 65535 in the URL, got {redact_url(url)!r}") from None
    return url


def as_statuses(value: object) -> tuple[str, ...]:
    """``200``, ``[200, 204]``, ``2xx`` or ``[2xx, 304]``."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = str(item).lower()
        number = text.isascii() and text.isdigit() and 100 <= int(text) <= 599  # ASCII: '²00' is no status
        if isinstance(item, bool) or not (number or (len(text) == 3 and text[0] in "12345" and text[1:] == "xx")):
            raise Invalid(f"expected an HTTP status like 200 or 2xx (or a list of them), got {show(item)}")
        out.append(text)
    if not out:
        raise Invalid("expected at least one HTTP status, got an empty list")
    return tuple(out)


class _Body:
    """A response body read against the run's deadline, one socket read at a time, each waiting at most the time
    left (a server that drips a byte a second cannot hold the run). ``stop``, the cancel hook, wakes a read in
    progress by shutting the socket for reading: ``response.close`` would wait for the reading thread to let go."""

    def __init__(self, raw: urllib3.HTTPResponse):
        self.raw = raw
        self.conn = raw.connection
        self._lock = threading.Lock()
        self._ours = self.conn is not None  # False once the connection went back to the pool (another run's now)
        give_back = raw.release_conn

        def release_conn() -> None:
            with self._lock:
                self._ours = False
            give_back()

        raw.release_conn = release_conn  # type: ignore[method-assign]  # so stop never shuts a pooled socket

    def read(self, ctx: RunContext) -> bytes:
        """The next bytes of the body (b"" at its end); raises JobTimeout at the deadline or when cancelled."""
        ctx.check()
        if self._ours and self.conn is not None and self.conn.sock is not None:
            self.conn.sock.settimeout(max(ctx.remaining, 0.001))
        return self.raw.read1(8192, decode_content=True)

    def stop(self) -> None:
        with self._lock:
            if self._ours and self.conn is not None and self.conn.sock is not None:
                import socket  # here: check and next read http jobs without opening any

                self.conn.sock.shutdown(socket.SHUT_RD)


def status_ok(status: int, expected: tuple[str, ...]) -> bool:
    text = str(status)
    return any(text == e or (e.endswith("xx") and text[0] == e[0]) for e in expected)


def as_secrets(value: object) -> tuple[str, ...]:
    """``sign: <secret>``, or ``sign: [<new>, <old>]`` to send one signature per secret (rotation)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise Invalid("expected a secret or a list of secrets, got an empty list")
    return tuple(as_nonempty_str(item) for item in items)


_session: requests.Session | None = None
_session_lock = threading.Lock()


def session() -> requests.Session:
    """The one pooled session of the process. It keeps no cookies: one job's must not reach another's."""
    global _session
    with _session_lock:
        if _session is None:
            import http.cookiejar

            import requests

            _session = requests.Session()
            _session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=64)
            _session.mount("http://", adapter)
            _session.mount("https://", adapter)
        return _session


def _reason(exc: Exception) -> str:
    """A short cause without the URL's query or credentials (they may hold secrets)."""
    text = str(exc)
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1].rstrip(")")
    return f"{type(exc).__name__}: {redact_url(text)}"[:300]


PARSERS: dict[str, Parser] = {
    "url": as_url,
    "method": lambda v: as_enum(*METHODS)(str(v).upper()),
    "headers": as_str_map,
    "params": as_str_map,
    "json": lambda v: v,  # any JSON value, sent as is
    "data": as_nonempty_str,
    "connect_timeout": as_duration,
    "expect_status": as_statuses,
    "verify": as_bool,
    "follow_redirects": as_bool,
    "sign": as_secrets,
}
