"""``python:`` jobs: call ``module:function`` from the app's code (``jobs/`` or the app itself)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import Invalid
from ..source import Path
from ..validate import Report, as_list, as_mapping, as_nonempty_str

JOB_KEYS = ("args", "kwargs", "app")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class PythonAction:
    target: str  # module:function
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    app: str | None = None  # package:create_app, for a Flask application context


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> PythonAction | None:
    before = len(report.problems)
    target = report.parse(path, value, as_target)
    kw: dict[str, Any] = {}
    for key, parser in (("args", as_list), ("kwargs", as_mapping), ("app", as_target)):
        if key in extras:
            raw, where = extras[key]
            kw[key] = report.parse(where, raw, parser)
    if target is None or len(report.problems) > before:
        return None
    if "args" in kw:
        kw["args"] = tuple(kw["args"])
    return PythonAction(target, **kw)


def as_target(value: Any) -> str:
    text = as_nonempty_str(value).strip()
    if not _TARGET.fullmatch(text):
        raise Invalid(f"expected module:function like jobs.digest:send, got {text!r}")
    return text
