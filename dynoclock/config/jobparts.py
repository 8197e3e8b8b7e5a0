"""Pieces of a job as the loader reads them: a value from the job or its defaults, instants, the trigger, and
actions read once for the jobs that write the same one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from dynoclock.actions import KINDS, Action
from dynoclock.config.envvars import expand
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_duration, as_instant, show
from dynoclock.jsontypes import JSONValue
from dynoclock.schedule import cron
from dynoclock.schedule.triggers import EPOCH, AtTrigger, CronTrigger, EveryTrigger, Trigger, shared


def literal(value: object) -> bool:
    """Text that interpolate would return as it is: a str (not one already expanded) without "$"."""
    return type(value) is str and "$" not in value


def names_unset(value: object, env: Mapping[str, str]) -> bool:
    """Whether ``value`` refers to a variable that ``env`` does not set (``${VAR}``, with no default)."""
    if isinstance(value, str):
        try:
            expand(value, env)
        except Invalid as exc:
            return "is not set" in str(exc)
        return False
    if isinstance(value, dict):
        return any(names_unset(v, env) for v in value.values())
    if isinstance(value, list):
        return any(names_unset(v, env) for v in value)
    return False


def pick(
    key: str, spec: dict[str, JSONValue], defaults: dict[str, JSONValue], path: Path
) -> tuple[JSONValue, Path | None]:
    """The job's own value for ``key``, else the default, with the path it came from."""
    if key in spec:
        return spec[key], (*path, key)
    if key in defaults:
        return defaults[key], ("defaults", key)
    return None, None


def instant(
    report: Report, key: str, spec: dict[str, JSONValue], defaults: dict[str, JSONValue], path: Path, zone: ZoneInfo
) -> datetime | None:
    value, where = pick(key, spec, defaults, path)
    return None if where is None else report.parse(where, value, as_instant(zone))


def trigger(
    report: Report,
    path: Path,
    key: str,
    spec: dict[str, JSONValue],
    defaults: dict[str, JSONValue],
    zone: ZoneInfo,
    jitter: timedelta | None,
    now: datetime | None,
) -> Trigger | None:
    where = (*path, key)
    if "anchor" in spec and key != "every":
        report.error((*path, "anchor"), f"'anchor' applies to 'every' only, and this job uses '{key}'")
    if key == "cron":
        expr = report.parse(where, spec[key], as_cron)
        return shared(CronTrigger, expr, zone) if expr else None
    if key == "every":
        interval = report.parse(where, spec[key], as_duration)
        anchor = instant(report, "anchor", spec, defaults, path, zone) or EPOCH
        if interval and jitter and jitter >= interval:
            report.error((*path, "jitter"), f"jitter must be shorter than the interval ({spec[key]})")
        return shared(EveryTrigger, interval, anchor) if interval else None
    moment = report.parse(where, spec[key], as_instant(zone))
    if moment is None:
        return None
    if now is not None and moment <= now:
        report.warn(where, f"{spec[key]} lies in the past: this job will not run")
    return AtTrigger(moment)


def as_cron(value: object) -> str:
    # The longest sensible expression lists every minute, hour, day and month (about 400 characters).
    if not isinstance(value, str) or len(value) > 1000:
        raise Invalid(f'expected a crontab expression like "0 2 * * *" or @daily, got {show(value)}')
    return cron.normalize(value)


class ActionCache:
    """Actions read once for the jobs of one schedule that write the same one (the same ``python:`` target and
    arguments, the same ``command:``...): real schedules repeat them, and an action is frozen, so the jobs share
    it as they share triggers (``triggers.shared``). Kept only when reading it raised no problem and no warning
    (those name the job), and looked up only for values of plain types, compared with their types: ``1``, ``1.0``
    and ``true`` are different keys, and text from the environment (``Expanded``: two may read alike and hold
    different pieces) is never looked up."""

    def __init__(self) -> None:
        self.actions: dict[object, Action] = {}

    def parse(
        self, report: Report, kind: str, path: Path, value: JSONValue, extras: dict[str, tuple[JSONValue, Path]]
    ) -> Action | None:
        """``KINDS[kind].parse(report, path, value, extras)``, or the same action read for an earlier job."""
        try:
            key = (kind, _key(value), tuple(sorted((name, _key(raw)) for name, (raw, _) in extras.items())))
        except _NotPlain:
            return KINDS[kind].parse(report, path, value, extras)
        action = self.actions.get(key)
        if action is not None:
            return action
        problems, warnings = len(report.problems), len(report.warnings)
        action = KINDS[kind].parse(report, path, value, extras)
        if action is not None and len(report.problems) == problems and len(report.warnings) == warnings:
            self.actions[key] = action
        return action


class _NotPlain(Exception):
    """A value that is not only lists, mappings and plain values: not looked up."""


_SCALARS = (str, int, bool, type(None))


def _key(value: object) -> object:
    """``value`` as a hashable key that compares its types too (``1`` is not ``1.0`` nor ``True``)."""
    kind = type(value)
    if kind in _SCALARS:
        return kind, value
    if kind is float:
        return kind, repr(value)  # -0.0 == 0.0, and nan is not equal to itself
    if kind is list:
        return kind, tuple(_key(item) for item in cast("list[object]", value))
    if kind is dict:
        return kind, tuple((k, _key(v)) for k, v in cast("dict[object, object]", value).items())
    raise _NotPlain
