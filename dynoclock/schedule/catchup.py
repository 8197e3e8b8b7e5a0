"""What to do about slots that passed with no row: pure, given the slots that have one and ``now``.

The slots that matter are those with no row after the job's last row before the scanned span: the
ones no clock claimed while none led, and the gaps between rows that a stopping clock handed over.
Within ``misfire_grace`` (the window) they run (only the latest unless ``catch_up: all``, the
others recorded ``skipped``); older ones are ``missed``, recorded in one row that says how many, from
when to when. ``every`` slots are counted by arithmetic, so a gap of days costs no walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dynoclock.config.durations import format_duration
from dynoclock.config.loader import Job
from dynoclock.observe.timefmt import iso_utc
from dynoclock.schedule.triggers import EveryTrigger

MAX_SLOTS = 100_000  # slots within the window handled one by one (the newest); older ones join the missed count
MAX_WALK = 100_000  # cron slots counted one by one past the window; beyond, the count is a lower bound
_JUMP = timedelta(days=1)  # after MAX_WALK, the walk goes on from this far before the window
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Missed:
    """Slots with no row past ``misfire_grace``: one row stands for them all, at the last one."""

    count: int
    first: datetime
    last: datetime
    at_least: bool = False  # the count stopped at MAX_WALK (a cron schedule unrun for months)

    def error(self, grace: timedelta) -> str:
        many = f"{'at least ' if self.at_least else ''}{self.count:,} slot{'s' if self.count != 1 else ''}"
        span = f"at {iso_utc(self.first)}" if self.count == 1 else f"from {iso_utc(self.first)} to {iso_utc(self.last)}"
        return f"not run within misfire_grace={format_duration(grace)}: {many} {span} (this row stands for all)"


@dataclass
class Plan:
    run: list[datetime] = field(default_factory=list)  # oldest first
    skipped: list[datetime] = field(default_factory=list)  # coalesced into a later run (catch_up: one)
    missed: Missed | None = None


def plan(job: Job, after: datetime | None, taken: list[datetime], now: datetime) -> Plan:
    """Slots of ``job`` up to ``now`` with no row, after ``after``, sorted into the plan.

    ``after``: the job's last slot with a row before the slots in ``taken`` (or where its past begins);
    None: the job has no past before ``taken``, whose first row starts it. ``taken``: slots with a row.
    """
    rows = sorted(t for t in taken if after is None or t > after)
    if after is None:
        if not rows:
            return Plan()  # no row, no past: the job starts now
        after, rows = rows[0], rows[1:]
    window = now - job.misfire_grace
    if isinstance(job.trigger, EveryTrigger):
        window = max(window, now - (MAX_SLOTS - 1) * job.trigger.interval)
    count, first, last, at_least = 0, None, None, False
    inside: list[datetime] = []
    for low, high, closed in zip([after, *rows], [*rows, now], [False] * len(rows) + [True], strict=True):
        n, a, b, more = _count(job, low, min(high, window))  # past the window, up to (not at) its start
        if n:
            count, first, last, at_least = count + n, first or a, b, at_least or more
        if high >= window:
            inside += _list(job, max(low, window - _TICK), high, closed)
    result = Plan(missed=Missed(count, first, last, at_least) if first and last else None)
    if job.catch_up == "all":
        result.run = inside
    elif inside and (not rows or inside[-1] > rows[-1]):
        result.run, result.skipped = inside[-1:], inside[:-1]
    else:  # a row after every gap: its run stands for them
        result.skipped = inside
    return result


def _count(job: Job, low: datetime, high: datetime) -> tuple[int, datetime | None, datetime | None, bool]:
    """How many slots lie strictly between ``low`` and ``high``, the first and the last, and whether the count
    is only a lower bound."""
    if high <= low:
        return 0, None, None, False
    if isinstance(job.trigger, EveryTrigger):
        first, last = job.next_after(low), _last_before(job, job.trigger, high)
        if first is None or last is None or last < first:
            return 0, None, None, False
        return (last - first) // job.trigger.interval + 1, first, last, False
    count, first, last, at_least = 0, None, None, False
    slot = job.next_after(low)
    while slot is not None and slot < high:
        count, first, last = count + 1, first or slot, slot
        if count % MAX_WALK == 0 and not at_least and slot < high - _JUMP:
            at_least, slot = True, job.next_after(high - _JUMP)
            continue
        slot = job.next_after(slot)
    return count, first, last, at_least


def _list(job: Job, low: datetime, high: datetime, closed: bool) -> list[datetime]:
    """The slots after ``low`` and before ``high`` (or at it, when ``closed``), oldest first."""
    if isinstance(job.trigger, EveryTrigger):
        first = job.next_after(low)
        last = _last_before(job, job.trigger, high + _TICK if closed else high)
        if first is None or last is None or last < first:
            return []
        step = job.trigger.interval
        return [first + n * step for n in range((last - first) // step + 1)]
    slots: list[datetime] = []
    slot = job.next_after(low)
    while slot is not None and (slot <= high if closed else slot < high) and len(slots) < MAX_SLOTS:
        slots.append(slot)
        slot = job.next_after(slot)
    return slots


def _last_before(job: Job, trigger: EveryTrigger, high: datetime) -> datetime | None:
    """The latest slot of an ``every`` job strictly before ``high``, inside its start/end window."""
    end = job.window.end
    if end is not None and end < high:
        high = end + _TICK
    anchor = trigger.anchor.astimezone(UTC)
    k = -((anchor - high.astimezone(UTC)) // trigger.interval) - 1  # ceil((high - anchor) / interval) - 1
    slot = anchor + k * trigger.interval
    start = job.window.start
    return None if start is not None and slot < start else slot
