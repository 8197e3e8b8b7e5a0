"""Load schedule.yaml into a validated ``Schedule``, or a ConfigError listing every problem.

Everything is checked here, at load time, so that a schedule that loads runs:
known keys only, exactly one trigger and one action per job, durations, zones,
instants, cron fields, ``${VAR}`` references. Problems carry file, line and key
path (``schedule.yaml:14: jobs.import-feeds.every: expected ...``).
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from types import MemberDescriptorType
from typing import Any
from zoneinfo import ZoneInfo

from dynoclock.actions import ALL_JOB_KEYS, JOB_KEYS, KINDS, Action
from dynoclock.actions.http import as_url
from dynoclock.config.credentials import schedule_secrets
from dynoclock.config.jobparts import ActionCache, instant, literal, names_unset, pick, trigger
from dynoclock.config.problems import ConfigError, Problem, Report
from dynoclock.config.source import Path, Source, load, quoted
from dynoclock.config.values import (
    Parser,
    as_bool,
    as_duration,
    as_duration_or_zero,
    as_enum,
    as_int,
    as_mapping,
    as_str,
    as_zone,
    interpolate,
)
from dynoclock.jsontypes import JSONValue
from dynoclock.schedule.triggers import Trigger, Window, shared

JOB_ID = re.compile(r"[a-z0-9_-]{1,100}")
TRIGGER_KEYS = ("cron", "every", "at")
DEFAULT_WORKERS = 300  # runs executing at once by default: threads (run/workers.py says why 300)
TOP_KEYS = ("timezone", "defaults", "jobs", "shutdown_grace", "history_keep", "workers")

# Job options that every kind of job has, with their parsers and defaults.
OPTIONS: dict[str, tuple[Parser, object]] = {
    "description": (as_str, ""),
    "timeout": (as_duration, timedelta(minutes=5)),
    "overlap": (as_enum("skip", "allow", "replace"), "skip"),
    "retries": (as_int(0, 100), 0),
    "retry_delay": (as_duration, timedelta(seconds=10)),
    "retry_max_delay": (as_duration, timedelta(minutes=5)),
    "misfire_grace": (as_duration_or_zero, timedelta(minutes=5)),
    "catch_up": (as_enum("one", "all"), "one"),
    "on_interrupted": (as_enum("skip", "retry"), "skip"),
    "jitter": (as_duration_or_zero, timedelta(0)),
    "ping": (as_url, None),
    "ping_style": (as_enum("healthchecks", "cronitor"), "healthchecks"),
    "on_failure": (as_url, None),
    "on_recovery": (as_url, None),
}
# Keys that need the job's zone or trigger to be read; handled in _job.
SPECIAL = ("enabled", "timezone", "start", "end", "anchor")
JOB_KEYS_ALL = frozenset((*OPTIONS, *SPECIAL, *TRIGGER_KEYS, *KINDS, *ALL_JOB_KEYS))
DEFAULT_KEYS = JOB_KEYS_ALL - set(TRIGGER_KEYS) - set(KINDS)
OPTION_KEYS = frozenset(OPTIONS)
# What a job is read for when the schedule is only viewed (status, next, crontab, the page): when it runs.
# Every other key (the action, its job-level keys, pings and webhooks) is neither interpolated nor validated.
NOTIFY_OPTIONS = ("ping", "ping_style", "on_failure", "on_recovery")
VIEW_KEYS = frozenset((*TRIGGER_KEYS, *SPECIAL, *(k for k in OPTIONS if k not in NOTIFY_OPTIONS)))


@dataclass(frozen=True, slots=True)
class Job:
    """One validated job: when (trigger, window, zone), what (action), and how (options)."""

    id: str
    trigger_key: str  # cron | every | at
    trigger_text: str  # as written, for messages
    trigger: Trigger
    zone: ZoneInfo
    kind: str  # http | sql | python | command | enqueue | celery
    action: Action | None  # None for a disabled job whose action names unset variables, and when only viewed
    enabled: bool = True
    runnable: bool = True  # has an action the clock can run: false for a disabled job naming unset variables
    window: Window = field(default_factory=Window)
    description: str = ""
    timeout: timedelta = timedelta(minutes=5)
    overlap: str = "skip"
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=10)
    retry_max_delay: timedelta = timedelta(minutes=5)
    misfire_grace: timedelta = timedelta(minutes=5)
    catch_up: str = "one"
    on_interrupted: str = "skip"
    jitter: timedelta = timedelta(0)
    ping: str | None = None  # monitoring URL (healthchecks.io conventions, or Cronitor's)
    ping_style: str = "healthchecks"
    on_failure: str | None = None  # webhook (Slack-compatible JSON) after the last attempt failed
    on_recovery: str | None = None  # webhook when a run succeeds after a failed one
    origin: str = "schedule"  # schedule (schedule.yaml) | api (added from the app: dynoclock.connect)
    version: int | None = None  # an api job's row version: its claims commit only while the row has it

    def next_after(self, after: datetime) -> datetime | None:
        """The job's first slot strictly after ``after``, inside its start/end window."""
        return self.window.next_after(self.trigger, after)

    def describe(self) -> str:
        return self.trigger.describe()


def _slot_setters() -> tuple[tuple[str, Callable[[Job, object], None]], ...] | None:
    """Each of Job's fields with its slot's setter, or None if Job is not a plain frozen slots dataclass."""
    setters = []
    for spec in fields(Job):
        slot = Job.__dict__.get(spec.name)
        if not isinstance(slot, MemberDescriptorType):
            return None
        setters.append((spec.name, slot.__set__))
    return None if hasattr(Job, "__post_init__") else tuple(setters)


_JOB_SLOTS = _slot_setters()


def new_job(values: dict[str, Any], **more: Any) -> Job:
    """``Job(**values, **more)``, every field given, for 10,000 jobs: a frozen dataclass's __init__ sets each of
    its 26 fields through object.__setattr__, looked up each time (a tenth of a load); this sets the slots
    directly. ``values`` is taken over (updated with ``more``). KeyError if a field is missing."""
    values.update(more)
    if _JOB_SLOTS is None:  # Job grew a __post_init__ or lost its slots
        return Job(**values)
    job = object.__new__(Job)
    for name, set_field in _JOB_SLOTS:
        set_field(job, values[name])
    if len(values) != len(_JOB_SLOTS):  # as Job() would: an unknown keyword is an error
        raise TypeError(f"unexpected fields for Job: {sorted(values.keys() - Job.__dataclass_fields__.keys())}")
    return job


@dataclass(frozen=True)
class Schedule:
    file: str
    zone: ZoneInfo
    jobs: dict[str, Job]
    shutdown_grace: timedelta = timedelta(seconds=25)
    history_keep: timedelta = timedelta(days=30)
    workers: int = DEFAULT_WORKERS  # runs executing at once: threads, mostly waiting on I/O
    warnings: list[Problem] = field(default_factory=list)
    secrets: frozenset[str] = frozenset()  # values to mask wherever they might be printed
    lines: dict[Path, int] = field(default_factory=dict, repr=False)  # key path -> line, for later problems


def default_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("CLOCK_SCHEDULE") or "schedule.yaml"


def load_schedule(
    file: str, env: Mapping[str, str] | None = None, now: datetime | None = None, view: bool = False
) -> Schedule:
    """Read and validate ``file``; ``now`` (if given) enables the "at lies in the past" warning.

    ``view=True`` reads only what says when jobs run (triggers, zones, windows, ``enabled``, timing options),
    for the read-only commands and the status page: actions are not parsed (``Job.action`` is None), and a
    variable only an action, a ping or a webhook names need not be set where the schedule is only viewed."""
    collecting = gc.isenabled()
    gc.disable()  # a load makes 10,000s of objects that live on and no cycles: a collection only walks them again
    try:
        return _load_schedule(file, os.environ if env is None else env, now, view)
    finally:
        if collecting:
            gc.enable()


def _load_schedule(file: str, env: Mapping[str, str], now: datetime | None, view: bool) -> Schedule:
    try:
        with open(file, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read the schedule: {exc.strerror}")]) from None
    src = load(file, raw)
    report = Report(src)
    top = report.parse((), src.data, as_mapping)
    if top is None:
        report.raise_if_failed()
    assert top is not None
    # Top-level keys starting with "x-" are free for YAML anchors (x-common: &common {...}), as in Compose files.
    top = {k: v for k, v in top.items() if not k.startswith("x-")}
    report.check_keys((), top, TOP_KEYS)
    defaults_raw = top.get("defaults")
    if view and isinstance(defaults_raw, dict):  # defaults: only the keys that say when
        top["defaults"] = {k: v for k, v in defaults_raw.items() if k in VIEW_KEYS}
    top = {k: interpolate(report, (k,), v, env) for k, v in top.items() if k != "jobs"} | {"jobs": top.get("jobs")}
    if view and isinstance(defaults_raw, dict):
        top["defaults"] = defaults_raw | top["defaults"]

    zone = report.parse(("timezone",), top.get("timezone", "UTC"), as_zone) or ZoneInfo("UTC")
    settings: dict[str, Any] = {}  # Schedule's keyword arguments, each of its parser's type
    for key, parser in (("shutdown_grace", as_duration), ("history_keep", as_duration), ("workers", as_int(1, 1000))):
        if key in top:
            settings[key] = report.parse((key,), top[key], parser)

    defaults = report.parse(("defaults",), top.get("defaults", {}) or {}, as_mapping) or {}
    for key in defaults:
        if key in TRIGGER_KEYS or key in KINDS:
            report.error(("defaults", key), f"'{key}' cannot be a default: each job names its own trigger and action")
    report.check_keys(
        ("defaults",), {k: v for k, v in defaults.items() if k not in (*TRIGGER_KEYS, *KINDS)}, DEFAULT_KEYS
    )
    parsed_defaults = {
        key: report.parse(("defaults", key), value, OPTIONS[key][0])
        for key, value in defaults.items()
        if key in OPTIONS and (key in VIEW_KEYS or not view)
    }

    jobs: dict[str, Job] = {}
    if "jobs" not in top or top["jobs"] is None:
        report.error(("jobs",) if "jobs" in top else (), "missing 'jobs:': expected a mapping of job id to job")
    else:
        raw_jobs = report.parse(("jobs",), top["jobs"], as_mapping) or {}
        if not raw_jobs and "jobs" in top and isinstance(top["jobs"], dict):
            report.warn(("jobs",), "no jobs are defined")
        common = _common(zone, defaults, parsed_defaults, env, now, view)
        for job_id, raw in raw_jobs.items():
            job = _job(report, job_id, raw, common)
            if job is not None:
                jobs[job_id] = job

    report.raise_if_failed()
    return Schedule(
        file=file,
        zone=zone,
        jobs=jobs,
        warnings=report.warnings,
        secrets=schedule_secrets(src.data, env),  # values to mask (of secret-named variables, credentials)
        lines=src.lines,
        **{k: v for k, v in settings.items() if v is not None},
    )


@dataclass(frozen=True)
class _Common:
    """What the jobs of one schedule share (its zone, defaults, environment, ``now``, ``view``), and what follows
    from it, worked out once rather than for each of 10,000 jobs."""

    zone: ZoneInfo
    defaults: dict[str, JSONValue]
    env: Mapping[str, str] | None  # None: a job of the Python API, every value taken literally
    now: datetime | None
    view: bool
    options: dict[str, object]  # each option of a job that does not set it: the default's, else OPTIONS'
    extras: dict[str, dict[str, tuple[JSONValue, Path]]]  # per action kind, its job keys that defaults set
    window: Window | None  # of a job that sets neither start nor end, if defaults set neither; else None
    actions: ActionCache | None  # None for a job of the Python API: read alone, nothing to share


def _common(
    zone: ZoneInfo,
    defaults: dict[str, JSONValue],
    parsed_defaults: dict[str, object],
    env: Mapping[str, str] | None,
    now: datetime | None,
    view: bool = False,
) -> _Common:
    options = {key: parsed_defaults.get(key, default) for key, (_, default) in OPTIONS.items()}
    extras: dict[str, dict[str, tuple[JSONValue, Path]]] = {
        kind: {k: (defaults[k], ("defaults", k)) for k in keys if k in defaults} for kind, keys in JOB_KEYS.items()
    }
    window = None if "start" in defaults or "end" in defaults else shared(Window, None, None)
    actions = ActionCache() if env is not None else None
    return _Common(zone, defaults, env, now, view, options, extras, window, actions)


def _job(report: Report, job_id: str, raw: JSONValue, common: _Common) -> Job | None:
    """One job of the file (``env``: its ``${VAR}`` are expanded), or of the Python API (``env`` None: every value
    is taken literally)."""
    zone, defaults, env, now, view = common.zone, common.defaults, common.env, common.now, common.view
    path: Path = ("jobs", job_id)
    if not JOB_ID.fullmatch(job_id):
        report.error(path, f"job id {quoted(job_id)} must be 1-100 of a-z, 0-9, '_' and '-'")
    spec = report.parse(path, raw, as_mapping)
    if spec is None:
        return None
    report.check_keys(path, spec, JOB_KEYS_ALL)  # before the filter below: a typo is reported even when disabled
    before = len(report.problems)
    enabled = True
    value, where = pick("enabled", spec, defaults, path)
    if where is not None:
        if "enabled" in spec and env is not None:  # defaults are expanded already
            value = interpolate(report, where, value, env)
        enabled = report.parse(where, value, as_bool) is not False
    # A disabled job may name variables that are unset where it is disabled (enabled: ${APP_URL:+true}):
    # problems in those values are not reported; every other problem is. As for ${VAR:+word}, a variable
    # set to "" counts as unset.
    unset: set[str] | None = None if enabled else set()
    job_env: Mapping[str, str] = {}
    if env is not None:
        job_env = env if enabled else {k: v for k, v in env.items() if v}
        read = VIEW_KEYS if view else spec.keys()  # viewed: the action and notifications are kept as written
        spec = {
            # A text without "$" is itself once expanded (most values): not passed through interpolate.
            k: interpolate(report, (*path, k), v, job_env, unset) if k in read and not literal(v) else v
            for k, v in spec.items()
        }

    triggers = [k for k in TRIGGER_KEYS if k in spec]
    kinds = [k for k in KINDS if k in spec]
    if len(triggers) != 1:
        found = f"got {' and '.join(triggers)}" if triggers else "found none"
        report.error(path, f"expected exactly one trigger: cron, every or at; {found}")
    if len(kinds) != 1:
        found = f"got {' and '.join(kinds)}" if kinds else "found none"
        report.error(path, f"expected exactly one action: {', '.join(KINDS)}; {found}")
    kind = kinds[0] if len(kinds) == 1 else None
    if kind is not None and not ALL_JOB_KEYS.isdisjoint(spec):  # most jobs set none
        for key in ALL_JOB_KEYS & spec.keys():
            if key not in JOB_KEYS[kind]:
                owners = " or ".join(k for k, keys in JOB_KEYS.items() if key in keys)
                report.error((*path, key), f"'{key}' applies to {owners} jobs only, and this is a {kind} job")

    options: dict[str, Any] = dict(common.options)  # Job's keyword arguments, each of its parser's type
    if not OPTION_KEYS.isdisjoint(spec):  # in OPTIONS' order, as the problems they may raise always were
        for key, (parser, _) in OPTIONS.items():
            if key in spec and (key in VIEW_KEYS or not view):
                options[key] = report.parse((*path, key), spec[key], parser)
    job_zone = zone
    tz_raw, tz_path = pick("timezone", spec, defaults, path)
    if tz_path is not None:
        job_zone = report.parse(tz_path, tz_raw, as_zone) or zone
    window = common.window
    if window is None or "start" in spec or "end" in spec:
        window = shared(Window, *(instant(report, key, spec, defaults, path, job_zone) for key in ("start", "end")))
        if window.start and window.end and window.start > window.end:
            report.error((*path, "end"), "end lies before start")

    when = None
    if len(triggers) == 1:
        when = trigger(report, path, triggers[0], spec, defaults, job_zone, options["jitter"], now)
    action = None
    runnable = True
    if kind is not None and view:
        runnable = enabled or not names_unset(
            [spec[kind], *(pick(k, spec, defaults, path)[0] for k in JOB_KEYS[kind])], job_env
        )
    elif kind is not None:
        extras = common.extras[kind]  # the job's own job keys win over the defaults'
        if not JOB_KEYS[kind].isdisjoint(spec):
            extras = extras | {key: (spec[key], (*path, key)) for key in JOB_KEYS[kind] if key in spec}
        if common.actions is None:
            action = KINDS[kind].parse(report, (*path, kind), spec[kind], extras)
        else:
            action = common.actions.parse(report, kind, (*path, kind), spec[kind], extras)

    if unset:
        report.problems[before:] = [
            p for p in report.problems[before:] if not any(p.path == u or p.path.startswith(u + ".") for u in unset)
        ]
    # A disabled job whose action names unset variables is still listed, with no action.
    if len(report.problems) > before or when is None or kind is None or (action is None and enabled and not view):
        return None
    return new_job(
        options,  # and the rest of Job's fields:
        id=job_id,
        trigger_key=triggers[0],
        trigger_text=str(spec[triggers[0]]),
        trigger=when,
        zone=job_zone,
        kind=kind,
        action=action,
        enabled=enabled,
        runnable=runnable if view else action is not None,
        window=window,
        origin="schedule" if env is not None else "api",
        version=None,
    )


# What every job given from the app shares (zone UTC, no defaults, values taken literally): made once.
_API = _common(ZoneInfo("UTC"), {}, {}, None, None)


def parse_job(job_id: str, spec: Mapping[str, JSONValue], now: datetime | None = None) -> Job:
    """One job given from the app (``dynoclock.connect().add``): the keys of a schedule.yaml job, validated by
    the same code with the same messages, each naming its key path (``jobs.digest-42.cron: ...``). Values are
    taken literally (no ``${VAR}`` expansion: ``$`` is not special); zone UTC unless the job says ``timezone``.
    Raises ConfigError with every problem."""
    report = Report(Source("", dict(spec)))
    common = _API if now is None else _common(ZoneInfo("UTC"), {}, {}, None, now)
    job = _job(report, job_id, dict(spec), common)
    report.raise_if_failed()
    if job is None:  # pragma: no cover - every None comes with a problem
        raise ConfigError([Problem("", None, f"jobs.{job_id}", "invalid job")])
    return job
