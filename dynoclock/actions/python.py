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

from dynoclock.actions.base import JobFailed, RunContext, shared
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_enum, as_mapping, as_nonempty_str, as_tuple, show
from dynoclock.jsontypes import JSONValue

JOB_KEYS: tuple[str, ...] = ("args", "kwargs", "app", "isolate", "max_memory")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_SIZE = re.compile(r"(\d{1,12})\s*([KMG]i?B?|B)?", re.IGNORECASE)
ISOLATE_DEFAULT = "thread"


@dataclass(frozen=True, slots=True)
class PythonAction:
    target: str  # module:function
    args: tuple[JSONValue, ...] = ()
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    app: str | None = None  # package:create_app, for a Flask application context
    isolate: str = ISOLATE_DEFAULT  # process: in a worker process the clock can kill (run/isolation.py)
    max_memory: int = 0  # bytes of address space a worker process may use (isolate: process); 0: no limit

    def run(self, ctx: RunContext) -> str:
        """Call the function (inside the Flask app context when ``app`` is set); its return value is logged."""
        if self.isolate == "process":
            from dynoclock.run.isolation import POOL

            return POOL.call((self.app or "", self.max_memory), self.target, self.args, self.kwargs, ctx)
        func = resolve(self.target)
        kwargs = dict(self.kwargs)
        if takes_run(self.target, func):
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


def parse(report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> PythonAction | None:
    before = len(report.problems)
    target = report.parse(path, value, as_target)
    kw: dict[str, Any] = {}  # PythonAction's keyword arguments, each of its parser's type
    parsers = (("args", as_tuple), ("kwargs", as_mapping), ("app", as_target), ("isolate", as_isolate),
               ("max_memory", as_size))  # fmt: skip
    for key, parser in parsers:
        if key in extras:
            raw, where = extras[key]
            kw[key] = report.parse(where, raw, parser)
    if kw.get("isolate", ISOLATE_DEFAULT) == "process":
        for key in ("args", "kwargs"):  # they cross to the worker process as JSON
            if key in extras and kw.get(key) is not None and (bad := _not_json(kw[key])) is not None:
                report.error(extras[key][1], f"with isolate: process, arguments must be JSON values; got {bad}")
    elif "max_memory" in extras and kw.get("max_memory") is not None:
        report.error(
            extras["max_memory"][1], "max_memory applies to isolate: process only (a thread shares the clock's memory)"
        )
    if target is None or len(report.problems) > before:
        return None
    if kw.get("args") or kw.get("kwargs"):  # JSON values: 1 and true would be one key of a cache
        return PythonAction(target, **kw)
    action: PythonAction = shared(
        _no_arguments, target, kw.get("app"), kw.get("isolate", ISOLATE_DEFAULT), kw.get("max_memory", 0)
    )
    return action


def _no_arguments(target: str, app: str | None, isolate: str, max_memory: int) -> PythonAction:
    return PythonAction(target, app=app, isolate=isolate, max_memory=max_memory)


as_isolate = as_enum("process", "thread")


def as_size(value: object) -> int:
    """A memory size: ``512MB``, ``2G``, ``1GiB`` (powers of 1024), or bytes."""
    match = _SIZE.fullmatch(str(value).strip()) if isinstance(value, (str, int)) and value is not True else None
    if match is None or int(match[1]) == 0:
        raise Invalid(f"expected a memory size like 512MB or 2GB, got {show(value)}")
    unit = (match[2] or "B")[0].upper()
    size = int(match[1]) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]
    if size < 64 << 20:
        raise Invalid(f"expected at least 64MB (a Python process needs that much to start), got {show(value)}")
    return size


def _not_json(value: object) -> str | None:
    """What in ``value`` JSON cannot carry (a date, a set...), or None."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    if isinstance(value, (list, tuple)):
        return next((bad for item in value if (bad := _not_json(item)) is not None), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"the key {show(k)}"
            if (bad := _not_json(v)) is not None:
                return bad
        return None
    return f"{show(value)} ({type(value).__name__})"


def as_target(value: object) -> str:
    text = as_nonempty_str(value).strip()
    if not _TARGET.fullmatch(text):
        raise Invalid(f"expected module:function like jobs.digest:send, got {text!r}")
    return text


@runtime_checkable
class FlaskApp(Protocol):
    """What an ``app:`` factory must return: something with Flask's ``app_context()``."""

    def app_context(self) -> AbstractContextManager[object]: ...


# Looked up once per process, under one lock (not held while importing: a module may import slowly).
_functions: dict[str, Callable[..., Any]] = {}
_apps: dict[str, FlaskApp] = {}
_takes_run_cache: dict[str, bool] = {}
_cache_lock = threading.Lock()


def resolve(target: str) -> Callable[..., Any]:
    """Import ``module:attr`` once; JobFailed (in the schedule's words) if that fails."""
    if (found := _functions.get(target)) is not None:  # a dict read is atomic: no lock on every run's path
        return found
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


def takes_run(target: str, func: Callable[..., Any]) -> bool:
    """Whether ``func`` has a ``run`` parameter (looked up once per target: inspect is slow)."""
    if (known := _takes_run_cache.get(target)) is not None:
        return known
    try:
        takes = "run" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes = False
    with _cache_lock:
        _takes_run_cache[target] = takes
    return takes
