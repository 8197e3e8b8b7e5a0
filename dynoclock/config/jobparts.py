"""Pieces of a job as the loader reads them: a value from the job or its defaults, instants, the trigger, and
actions read once for the jobs that write the same one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dynoclock.config.envvars import expand
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_duration, as_instant, show
from dynoclock.jsontypes import JSONValue
from dynoclock.schedule import cron
from dynoclock.schedule.triggers import EPOCH, AtTrigger, CronTrigger, EveryTrigger, Trigger, shared


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
