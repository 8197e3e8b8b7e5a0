"""Cron expressions with Debian (Vixie) cron semantics, evaluated by cronsim.

APScheduler's ``CronTrigger.from_crontab`` is not cron: its day-of-week is off by
one (0 is Monday, not Sunday), day-of-month and day-of-week are ANDed where cron
ORs them, it has no macros (@daily...), and it uses the host's zone. cronsim
(the evaluator behind healthchecks.io) follows Debian cron, including its DST
rules. It also accepts extensions Debian cron does not (``L``, ``#``, ``W``, a
seconds field); we validate each field ourselves first, so that a schedule
means the same thing here as in a crontab and errors name the field.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from dynoclock.config.problems import Invalid

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = [  # (name, low, high, names)
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
]
_ITEM = re.compile(r"(?P<base>\*|(?P<a>[0-9a-z]+)(?:-(?P<b>[0-9a-z]+))?)(?:/(?P<step>[0-9]+))?")


@functools.lru_cache(maxsize=4096)
def normalize(expr: str) -> str:
    """Validate ``expr`` and return it as five lowercase fields (macros expanded).

    Raises Invalid with a message naming the bad field, as Debian cron would refuse it. Cached: a large
    schedule repeats a few expressions (10,000 jobs in 16 shapes: 0.08 s of ``check``).
    """
    text = " ".join(expr.split()).lower()
    if text.startswith("@"):
        if text == "@reboot":
            raise Invalid("@reboot has no time to schedule; use 'at:' for a one-off run")
        if text not in MACROS:
            raise Invalid(f"unknown macro {expr!r}; expected one of {', '.join(MACROS)}")
        return MACROS[text]
    fields = text.split(" ")
    if len(fields) != 5:
        raise Invalid(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)} in {expr!r}")
    fields = [_check_field(value, i) for i, value in enumerate(fields)]
    text = " ".join(fields)
    if fields[2] == "*" or fields[3] == "*":  # every month has day 1, some month every day: it fires
        return text
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:  # the only case left: a day that no listed month has
        raise Invalid(f"{expr!r} never fires: no listed month has that day-of-month") from None
    return text


@functools.lru_cache(maxsize=4096)
def _check_field(value: str, index: int) -> str:
    """One field (the ``index``-th) validated, each of its list items as _check_item gives it. Cached: the
    expressions of a big schedule differ (most are not repeated) but their fields mostly do ("0", "*", "1-5")."""
    name, low, high, names = _FIELDS[index]
    return ",".join(_check_item(item, name, low, high, names) for item in value.split(","))


@functools.lru_cache(maxsize=4096)
def _check_item(item: str, name: str, low: int, high: int, names: tuple[str, ...]) -> str:
    """Validate one list item; return it, or a plainer spelling that means the same to cron and to cronsim."""
    m = _ITEM.fullmatch(item)
    if not m:
        raise Invalid(f"bad {name} {item!r}: expected a number {low}-{high}, a range, a list, */step or *")
    values = []
    for part in (m.group("a"), m.group("b")):
        if part is None:
            continue
        if part.isdigit():
            number = int(part)
        elif part in names:
            number = names.index(part) + (1 if name == "month" else 0)
        else:
            allowed = f"{low}-{high}" + (f" or a name ({names[0]}, {names[1]}, ...)" if names else "")
            raise Invalid(f"bad {name} {part!r}: expected {allowed}")
        if not low <= number <= high:
            raise Invalid(f"bad {name} {part!r}: out of range {low}-{high}")
        values.append(number)
    if len(values) == 2 and values[0] > values[1]:
        raise Invalid(f"bad {name} range {item!r}: it runs backwards")
    if m.group("step") is not None and int(m.group("step")) == 0:
        raise Invalid(f"bad {name} step in {item!r}: the step must be at least 1")
    if len(values) == 2 and values[0] == values[1] and m.group("step") is not None:
        # In cron "a-a/n" is just a; cronsim reads a one-value range with a step as "a/n" (a to the maximum).
        return m.group("a")
    return item


def next_after(expr: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """First fire time (UTC) strictly after ``after``, evaluated in ``zone``; None if none follows.

    ``expr`` must come from normalize(). cronsim evaluates fixed-time jobs on the
    wall clock, which can step back across a fall-back fold; the loop keeps the
    answer strictly after ``after`` in absolute time.
    """
    return _next_after_utc(expr, zone, after.astimezone(UTC))


@functools.lru_cache(maxsize=512)
def _next_after_utc(expr: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """``next_after`` of an instant in UTC (the cache's key: an aware time in another zone compares by its wall
    time, ignoring a fall-back fold). Cached: jobs often share an expression and, at start, the instant they
    count from; each evaluation costs a parse and a walk of cronsim's (about 50 us)."""
    minute, hour = expr.split()[:2]
    if minute.startswith("*") or hour.startswith("*"):
        return _next_wildcard(expr, zone, after)
    # Compare in UTC: aware datetimes sharing a tzinfo compare by wall time, ignoring fold.
    for fire in CronSim(expr, after.astimezone(zone)):  # stops after 50 years without a match
        fire_utc = fire.astimezone(UTC)
        if fire_utc > after:
            return fire_utc
    return None


def _next_wildcard(expr: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """Wildcard jobs (minute or hour starts with ``*``) run at every real instant whose wall time matches.

    A wall time skipped by spring-forward never happens; one repeated by fall-back happens
    twice. cronsim's own zone handling for these jobs misses or invents runs where the clock
    changes at midnight (America/Santiago, Africa/Cairo) or by 30 minutes (Australia/Lord_Howe),
    so cronsim only lists matching wall times here (naive, no zone) and we map each to instants.
    """
    wall = after.astimezone(zone).replace(tzinfo=None)
    # A wall time earlier than ``after``'s can still come after it: on the second pass of a
    # fall-back within the next day. Start that much earlier (the wall clock's lag a day later).
    lag = wall + timedelta(days=1) - (after + timedelta(days=1)).astimezone(zone).replace(tzinfo=None)
    best: datetime | None = None
    for candidate in CronSim(expr, wall - max(lag, timedelta(0))):  # naive: plain calendar arithmetic
        instants = _instants(candidate, zone)
        if not instants:
            continue  # skipped by spring-forward: no run
        if best is not None and instants[0] >= best:
            break  # first-pass instants grow with the wall time: no later wall time can do better
        best = min([i for i in instants if i > after and (best is None or i < best)], default=best)
        if best is not None and lag <= timedelta(0):
            break  # no fall-back ahead: wall times come in the order of their instants
    return best


def _instants(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants whose local time in ``zone`` reads ``wall`` (naive): none, one, or two."""
    found = set()
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:  # a skipped time reads back differently
            found.add(instant)
    return sorted(found)


def describe(expr: str) -> str:
    """The schedule in words, e.g. ``At 04:05 on Tuesday``."""
    return CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC)).explain()
