"""``enqueue:`` jobs: put a job on the app's RQ queue, for worker dynos to run."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..errors import Invalid
from ..redact import redact_url
from ..source import Path
from ..validate import Report, as_bool, as_duration, as_list, as_mapping, as_nonempty_str

JOB_KEYS: tuple[str, ...] = ()
KEYS = ("func", "queue", "args", "kwargs", "job_timeout", "result_ttl", "meta", "redis", "wait")
_FUNC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+")


@dataclass(frozen=True)
class EnqueueAction:
    func: str
    queue: str = "default"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    job_timeout: timedelta | None = None
    result_ttl: timedelta | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    redis: str | None = None  # None: $REDIS_URL at run time
    wait: bool = False


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> EnqueueAction | None:
    spec = report.parse(path, value, as_mapping)
    if spec is None:
        return None
    before = len(report.problems)
    report.check_keys(path, spec, KEYS)
    if "func" not in spec:
        report.error(path, "missing 'func': expected func: app.tasks.export_posts")
        return None
    parsers: dict[str, Callable[[Any], Any]] = {
        "func": as_func,
        "queue": as_nonempty_str,
        "args": as_list,
        "kwargs": as_mapping,
        "job_timeout": as_duration,
        "result_ttl": as_duration,
        "meta": as_mapping,
        "redis": as_redis_url,
        "wait": as_bool,
    }
    kw: dict[str, Any] = {
        key: report.parse((*path, key), spec[key], parser) for key, parser in parsers.items() if key in spec
    }
    if len(report.problems) > before:
        return None
    if "args" in kw:
        kw["args"] = tuple(kw["args"])
    return EnqueueAction(**kw)


def as_func(value: Any) -> str:
    text = as_nonempty_str(value).strip()
    if not _FUNC.fullmatch(text):
        raise Invalid(f"expected an import path like app.tasks.export_posts, got {text!r}")
    return text


def as_redis_url(value: Any) -> str:
    url = as_nonempty_str(value).strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        shown = redact_url(url) if "://" in url or "@" not in url else "***@" + url.rsplit("@", 1)[1]
        raise Invalid(f"expected a Redis URL like redis://localhost:6379/0 or rediss://..., got {shown!r}")
    return url
