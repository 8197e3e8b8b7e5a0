"""An independent reference evaluator of Debian (Vixie) cron semantics, for the tests only.

Written from crontab(5) and from Debian cron's handling of clock changes. It shares no
code with dynoclock or cronsim, and favours being obviously right over being fast: it
walks local calendar days one by one and asks, for each matching day, hour and minute,
which real instants (if any) that wall-clock time denotes in the zone.

Rules, as crontab(5) states them:
- Fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7
  (0 and 7 are Sunday). Month and day-of-week also take the first three letters of
  the name, case-insensitively (jan..dec, sun..sat).
- "*" means first-last; "a-b" an inclusive range; lists are comma-separated; "/n"
  after a range or "*" takes every n-th value; "a/n" means "a-last/n".
- "@yearly" (= "@annually"), "@monthly", "@weekly", "@daily" (= "@midnight") and
  "@hourly" stand for the five-field schedules in MACROS.
- Day rule: if the day-of-month or the day-of-week field starts with "*", a day must
  match both fields; otherwise a day matching either field is enough.

Clock changes (Debian cron, as its manual and source describe them):
- A job is "wildcard" when its minute or hour field starts with "*", else "fixed".
- Wildcard jobs run at every real instant whose local time matches: a time skipped by
  spring-forward does not happen, a time repeated by fall-back happens twice.
- Fixed jobs run once per matching local time: a skipped time runs at the change (the
  first wall-clock minute that exists after it; several skipped times collapse into
  that one run), and a repeated time runs only at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names) for minute, hour, day of month, month, day of week.
FIELDS: list[tuple[int, int, list[str]]] = [(0, 59, []), (0, 23, []), (1, 31, []), (1, 12, MONTHS), (0, 7, DAYS)]


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday .. 6 = Saturday (7 folded into 0)
    day_or: bool  # both day fields restricted: either may match
    wildcard: bool  # minute or hour field starts with "*"


def _number(text: str, low: int, high: int, names: list[str]) -> int:
    if text.lower() in names:
        value = names.index(text.lower()) + low  # jan = 1, sun = 0
    elif text.isdigit():
        value = int(text)
    else:
        raise ValueError(f"not a number or name: {text!r}")
    if not low <= value <= high:
        raise ValueError(f"{value} out of range {low}-{high}")
    return value


def parse_field(text: str, low: int, high: int, names: list[str]) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):  # a list: the union of its items
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) >= 1):
            raise ValueError(f"bad step in {item!r}")
        step = int(step_text) if slash else 1
        if base == "*":  # first-last
            first, last = low, high
        elif "-" in base:  # an inclusive range a-b
            a, b = base.split("-")
            first, last = _number(a, low, high, names), _number(b, low, high, names)
            if first > last:
                raise ValueError(f"backwards range {item!r}")
        else:  # a single value; with a step it means value-last
            first = _number(base, low, high, names)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values


def parse(expr: str) -> Cron:
    text = " ".join(expr.split())
    if text.startswith("@"):
        text = MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields: {expr!r}")
    minutes, hours, doms, months, dows = (parse_field(f, *spec) for f, spec in zip(fields, FIELDS, strict=True))
    return Cron(
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        doms=frozenset(doms),
        months=frozenset(months),
        dows=frozenset(d % 7 for d in dows),  # 0 and 7 are both Sunday
        day_or=not (fields[2].startswith("*") or fields[4].startswith("*")),
        wildcard=fields[0].startswith("*") or fields[1].startswith("*"),
    )


def day_matches(cron: Cron, day: date) -> bool:
    if day.month not in cron.months:
        return False
    dom = day.day in cron.doms
    dow = day.isoweekday() % 7 in cron.dows  # isoweekday: Monday 1 .. Sunday 7
    return (dom or dow) if cron.day_or else (dom and dow)


def real_instants(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants whose local time in ``zone`` reads ``wall`` (naive): none, one, or two."""
    found = set()
    for fold in (0, 1):  # PEP 495: fold=0 is the first of two readings, fold=1 the second
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:  # a skipped time reads back differently
            found.add(instant)
    return sorted(found)


def _steady_offset(day: date, zone: ZoneInfo) -> timedelta | None:
    """The zone's UTC offset if it is the same all day (no clock change), else None."""
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    offsets = {t.utcoffset() for t in (start, start.replace(fold=1), end, end.replace(fold=1))}
    return offsets.pop() if len(offsets) == 1 else None


def _day_instants(cron: Cron, zone: ZoneInfo, day: date) -> set[datetime]:
    walls = [datetime.combine(day, time(h, m)) for h in sorted(cron.hours) for m in sorted(cron.minutes)]
    offset = _steady_offset(day, zone)
    if offset is not None:  # an ordinary day: every wall time exists exactly once
        return {(wall - offset).replace(tzinfo=UTC) for wall in walls}
    out: set[datetime] = set()
    for wall in walls:
        real = real_instants(wall, zone)
        if cron.wildcard:
            out.update(real)  # every real instant: none if skipped, both passes if repeated
        elif real:
            out.add(real[0])  # fixed and repeated: the first occurrence only
        else:
            out.add(_at_the_change(wall, zone))  # fixed and skipped: once, at the change
    return out


def _at_the_change(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first wall-clock minute after the skipped ``wall`` that exists (e.g. 02:30 -> 03:00)."""
    while True:
        wall += timedelta(minutes=1)
        real = real_instants(wall, zone)
        if real:
            return real[0]


def fire_times(expr: str, zone: ZoneInfo, after: datetime, until: datetime) -> Iterator[datetime]:
    """The fire times (UTC, ascending, distinct) strictly after ``after`` and not after ``until``."""
    cron = parse(expr)
    after, until = after.astimezone(UTC), until.astimezone(UTC)
    # Start a day early: a fall-back can repeat local times of the previous date.
    day = after.astimezone(zone).date() - timedelta(days=1)
    last_day = until.astimezone(zone).date() + timedelta(days=1)
    last = after
    while day <= last_day:
        if day_matches(cron, day):
            for instant in sorted(_day_instants(cron, zone, day)):
                if instant > until:
                    return
                if instant > last:  # strictly after `after`, and a collapsed run only once
                    last = instant
                    yield instant
                elif after < instant < last:  # only if a zone's local date ever ran backwards
                    raise AssertionError(f"oracle: {instant} comes after {last} in local-date order")
        day += timedelta(days=1)


def next_fires(expr: str, zone: ZoneInfo, after: datetime, count: int, until: datetime) -> list[datetime]:
    """The first ``count`` fire times strictly after ``after`` (fewer if ``until`` comes first)."""
    out = []
    for instant in fire_times(expr, zone, after, until):
        out.append(instant)
        if len(out) == count:
            break
    return out
