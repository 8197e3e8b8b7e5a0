"""Sentry Crons check-ins: ``in_progress`` when a run starts, ``ok`` or ``error`` with its duration at its end.

Used by ``run/notify.py`` (on its background threads) when ``SENTRY_DSN`` is set and ``sentry-sdk`` is installed.
The monitor slug is the job id; each check-in carries the job's ``monitor_config`` so that Sentry creates and
updates the monitor: the crontab (cron jobs) or the interval (``every`` jobs of whole minutes), the job's zone,
``checkin_margin`` from ``misfire_grace`` and ``max_runtime`` from ``timeout`` (times its attempts, plus the retry
delays). An ``at`` job, or an interval Sentry cannot say (``every: 30s``), sends check-ins without a schedule.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from dynoclock.schedule.triggers import CronTrigger, EveryTrigger

if TYPE_CHECKING:
    from sentry_sdk._types import MonitorConfig, MonitorConfigSchedule, MonitorConfigScheduleUnit

    from dynoclock.config.loader import Job

# Sentry's interval units, largest first; a month or a year is not a fixed length, so not used here.
UNITS: tuple[tuple[MonitorConfigScheduleUnit, timedelta], ...] = (
    ("week", timedelta(weeks=1)), ("day", timedelta(days=1)), ("hour", timedelta(hours=1)),
    ("minute", timedelta(minutes=1)),
)  # fmt: skip


def _minutes(span: timedelta) -> int:
    return max(1, math.ceil(span.total_seconds() / 60))


def schedule_of(job: Job) -> MonitorConfigSchedule | None:
    """The job's schedule as Sentry says it, or None when it cannot (a one-off ``at``, a sub-minute interval)."""
    trigger = job.trigger
    if isinstance(trigger, CronTrigger):
        return {"type": "crontab", "value": trigger.expr}
    if isinstance(trigger, EveryTrigger):
        for unit, size in UNITS:
            if trigger.interval >= size and trigger.interval % size == timedelta(0):
                return {"type": "interval", "value": trigger.interval // size, "unit": unit}
    return None


def max_runtime(job: Job) -> timedelta:
    """The longest a run may take from its first start to its last end: every attempt and the waits between."""
    total = job.timeout * (job.retries + 1)
    for n in range(1, job.retries + 1):
        total += min(job.retry_delay * 2 ** (n - 1), job.retry_max_delay)
    return total


def monitor_config(job: Job) -> MonitorConfig | None:
    schedule = schedule_of(job)
    if schedule is None:
        return None
    return {
        "schedule": schedule,
        "timezone": job.zone.key,
        "checkin_margin": _minutes(job.misfire_grace),
        "max_runtime": _minutes(max_runtime(job)),
    }


def check_in(job: Job, run_id: str, status: str, duration_ms: int | None = None) -> None:
    """One check-in of the run ``run_id`` (its id is the check-in's, so the start and the end pair up)."""
    from sentry_sdk.crons import capture_checkin

    capture_checkin(
        monitor_slug=job.id,
        check_in_id=run_id,
        status=status,
        duration=None if duration_ms is None else duration_ms / 1000,
        monitor_config=monitor_config(job),
    )
