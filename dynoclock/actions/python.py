"""``python:`` jobs: call ``module:function`` from the app's code (``jobs/`` or the app itself)."""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from dynoclock.actions.base import JobFailed, RunContext
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_mapping, as_nonempty_str, as_tuple

JOB_KEYS: tuple[str, ...] = ("args", "kwargs", "app")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class PythonAction:
    target: str  # module:function
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    app: str | None = None  # package:create_app, for a Flask application context

    def run(self, ctx: RunContext) -> str:
        """Call the function (inside the Flask app context when ``app`` is set); its return value is logged."""
        func = resolve(self.target)
        kwargs = dict(self.kwargs)
        if _takes_run(self.target, func):
            kwargs["run"] = ctx
        if self.app is None:
            result = func(*self.args, **kwargs)
        else:
            with flask_app(self.app).app_context():
                result = func(*self.args, **kwargs)
        return "" if result is None else str(result)

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        """The function (and the app factory) must import."""
        for target in (self.target, self.app):
            if target is None:
                continue
            try:
                resolve(target)
            except JobFailed as exc:
                return str(exc).split(": ", 1)[1]
        return None


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> PythonAction | None:
    before = len(report.problems)
    target = report.parse(path, value, as_target)
    kw: dict[str, Any] = {}
    for key, parser in (("args", as_tuple), ("kwargs", as_mapping), ("app", as_target)):
        if key in extras:
            raw, where = extras[key]
            kw[key] = report.parse(where, raw, parser)
    if target is None or len(report.problems) > before:
        return None
    return PythonAction(target, **kw)


def as_target(value: Any) -> str:
    text = as_nonempty_str(value).strip()
    if not _TARGET.fullmatch(text):
        raise Invalid(f"expected module:function like jobs.digest:send, got {text!r}")
    return text


@runtime_checkable
class FlaskApp(Protocol):
    """What an ``app:`` factory must return: something with Flask's ``app_context()``."""

    def app_context(self) -> AbstractContextManager[Any]: ...


# Looked up once per process, under one lock (not held while importing: a module may import slowly).
_functions: dict[str, Callable[..., Any]] = {}
_apps: dict[str, FlaskApp] = {}
_takes_run_cache: dict[str, bool] = {}
_cache_lock = threading.Lock()


def resolve(target: str) -> Callable[..., Any]:
    """Import ``module:attr`` once; JobFailed (in the schedule's words) if that fails."""
    with _cache_lock:
        if target in _functions:
            return _functions[target]
    module_name, _, attr = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise JobFailed(f"python={target}: cannot import {module_name}: {exc}") from None
    except AttributeError:
        raise JobFailed(f"python={target}: {module_name} has no {attr}") from None
    if not callable(obj):
        raise JobFailed(f"python={target}: {attr} is not callable")
    with _cache_lock:
        _functions[target] = obj
    return obj


def flask_app(factory: str) -> FlaskApp:
    """The app made by ``package:create_app``, made once per process."""
    with _cache_lock:
        if factory in _apps:
            return _apps[factory]
    app = resolve(factory)()
    if not isinstance(app, FlaskApp):
        raise JobFailed(f"app={factory}: it returned {type(app).__name__}, not a Flask app")
    with _cache_lock:
        return _apps.setdefault(factory, app)


def _takes_run(target: str, func: Callable[..., Any]) -> bool:
    """Whether ``func`` has a ``run`` parameter (looked up once per target: inspect is slow)."""
    with _cache_lock:
        if target in _takes_run_cache:
            return _takes_run_cache[target]
    try:
        takes = "run" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes = False
    with _cache_lock:
        _takes_run_cache[target] = takes
    return takes
