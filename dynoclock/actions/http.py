"""``http:`` jobs: call one of the app's endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from ..errors import Invalid
from ..redact import redact_url
from ..source import Path
from ..validate import Report, as_bool, as_duration, as_enum, as_mapping, as_nonempty_str, as_str_map, show

JOB_KEYS: tuple[str, ...] = ()
KEYS = (
    "url", "method", "headers", "params", "json", "data",
    "connect_timeout", "expect_status", "verify", "follow_redirects", "sign",
)  # fmt: skip
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


@dataclass(frozen=True)
class HttpAction:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    data: str | None = None
    connect_timeout: timedelta = timedelta(seconds=10)
    expect_status: tuple[str, ...] = ("2xx",)
    verify: bool = True
    follow_redirects: bool = False
    sign: str | None = None


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> HttpAction | None:
    spec = report.parse(path, value, as_mapping)
    if spec is None:
        return None
    report.check_keys(path, spec, KEYS)
    if "url" not in spec:
        report.error(path, "missing 'url': expected url: https://app.example.com/tasks/x")
        return None
    before = len(report.problems)
    url = report.parse((*path, "url"), spec["url"], as_url)
    kw: dict[str, Any] = {}
    parsers = {
        "method": lambda v: as_enum(*METHODS)(str(v).upper()),
        "headers": as_str_map,
        "params": as_str_map,
        "data": as_nonempty_str,
        "connect_timeout": as_duration,
        "expect_status": as_statuses,
        "verify": as_bool,
        "follow_redirects": as_bool,
        "sign": as_nonempty_str,
    }
    for key, parser in parsers.items():
        if key in spec:
            kw[key] = report.parse((*path, key), spec[key], parser)
    if "json" in spec:
        kw["json"] = spec["json"]
        if "data" in spec:
            report.error((*path, "data"), "set either 'json' or 'data', not both")
    if url is None or len(report.problems) > before:
        return None
    return HttpAction(url=url, **kw)


def as_url(value: Any) -> str:
    url = as_nonempty_str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"expected an http:// or https:// URL, got {redact_url(url)!r}")
    return url


def as_statuses(value: Any) -> tuple[str, ...]:
    """``200``, ``[200, 204]``, ``2xx`` or ``[2xx, 304]``."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = str(item).lower()
        if isinstance(item, bool) or not (
            (text.isdigit() and 100 <= int(text) <= 599) or (len(text) == 3 and text[0] in "12345" and text[1:] == "xx")
        ):
            raise Invalid(f"expected an HTTP status like 200 or 2xx (or a list of them), got {show(item)}")
        out.append(text)
    if not out:
        raise Invalid("expected at least one HTTP status, got an empty list")
    return tuple(out)
