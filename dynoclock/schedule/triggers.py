"""When a job runs: pure schedule math, ``next_after(after) -> slot``, all in UTC.

Nothing here reads the clock; callers pass the instant. Every clock process
computes the same slots for the same schedule: cron and ``at`` by definition,
``every`` by counting intervals from a fixed anchor (the Unix epoch unless the
job sets ``anchor:``), never from process start, so a restart cannot reset an
interval: counted from start-up, "every 3 days" would never fire on a dyno restarted daily.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar
from zoneinfo import ZoneInfo

from dynoclock.config.durations import format_duration
from dynoclock.schedule import cron

if TYPE_CHECKING:
    from dynoclock.config.loader import Job

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


class Trigger(Protocol):
    """A schedule: the slots at which a job is due."""

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after`` (aware), in UTC; None when there is none."""
        ...

    def describe(self) -> str:
        """The schedule in words."""
        ...


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """A 5-field crontab expression (normalized by cron.normalize) evaluated in ``zone``."""

    expr: str
    zone: ZoneInfo

    def next_after(self, after: datetime) -> datetime | None:
        return cron.next_after(self.expr, self.zone, after)

    def describe(self) -> str:
        return cron.describe(self.expr)


@dataclass(frozen=True, slots=True)
class EveryTrigger:
    """Slots at ``anchor + k * interval`` for every integer k: absolute time, not wall time."""

    interval: timedelta
    anchor: datetime = EPOCH

    def next_after(self, after: datetime) -> datetime | None:
        # In UTC: adding a timedelta to a datetime in a DST zone is wall-clock arithmetic.
        anchor = self.anchor.astimezone(UTC)
        # timedelta // timedelta is exact integer arithmetic on microseconds.
        k = (after.astimezone(UTC) - anchor) // self.interval + 1
        return anchor + k * self.interval

    def describe(self) -> str:
        text = f"Every {format_duration(self.interval)}"
        if self.anchor != EPOCH:
            text += f" from {self.anchor.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        return text


@dataclass(frozen=True, slots=True)
class AtTrigger:
    """One run at one instant."""

    instant: datetime

    def next_after(self, after: datetime) -> datetime | None:
        return self.instant.astimezone(UTC) if self.instant > after else None

    def describe(self) -> str:
        return f"Once at {self.instant.strftime('%Y-%m-%d %H:%M:%S')} UTC"


@dataclass(frozen=True, slots=True)
class Window:
    """Optional ``start`` / ``end`` bounds (inclusive) on a job's slots."""

    start: datetime | None = None
    end: datetime | None = None

    def next_after(self, trigger: Trigger, after: datetime) -> datetime | None:
        """The trigger's first slot after ``after`` that lies inside the window."""
        if self.start is not None and after < self.start:
            after = self.start - timedelta(microseconds=1)
        slot = trigger.next_after(after)
        if slot is None or (self.end is not None and slot > self.end):
            return None
        return slot


def upcoming(trigger: Trigger, after: datetime, count: int, window: Window = Window()) -> list[datetime]:
    """The next ``count`` slots strictly after ``after`` (fewer if the schedule ends)."""
    slots: list[datetime] = []
    while len(slots) < count:
        slot = window.next_after(trigger, after)
        if slot is None:
            break
        slots.append(slot)
        after = slot
    return slots


NO_JITTER = timedelta(0)


def jitter_offset(job_id: str, slot: datetime, jitter: timedelta) -> timedelta:
    """A delay in [0, jitter) derived from (job, slot), so every clock picks the same one.

    The slot (``scheduled_for``) stays the run's identity; jitter only delays its start.
    """
    if not jitter or jitter < NO_JITTER:
        return NO_JITTER
    digest = hashlib.sha256(f"{job_id}@{slot.isoformat()}".encode()).digest()
    span_ms = int(jitter.total_seconds() * 1000)
    return timedelta(milliseconds=int.from_bytes(digest[:8], "big") % span_ms)


@functools.lru_cache(maxsize=256)
def shared(kind: Callable[..., T], *fields: object) -> T:
    """One frozen ``kind(*fields)`` for the jobs that have the same (a window, a cron or every trigger): with 10,000
    jobs, most repeat a few, and each is kept as long as the clock runs. Few entries: one costs more than the
    object, and values that do not repeat (most crons of a big schedule) only pass through."""
    return kind(*fields)


def trigger_keys(job: Job) -> dict[str, str | bool]:
    """A schedule.yaml job's trigger as keys (no action, no secret): what ``jobs()`` needs for its next run."""
    keys: dict[str, str | bool] = {}
    trigger = job.trigger
    if isinstance(trigger, CronTrigger):
        keys = {"cron": trigger.expr, "timezone": trigger.zone.key}
    elif isinstance(trigger, EveryTrigger):
        keys = {"every": format_duration(trigger.interval), "anchor": trigger.anchor.isoformat()}
    elif isinstance(trigger, AtTrigger):
        keys = {"at": trigger.instant.isoformat()}
    for key in ("start", "end"):
        value = getattr(job.window, key)
        if value is not None:
            keys[key] = value.isoformat()
    if not job.enabled:
        keys["enabled"] = False
    return keys
