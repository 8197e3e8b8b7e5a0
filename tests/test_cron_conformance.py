"""dynoclock.schedule.cron against Debian cron: a generated comparison with an independent oracle,
a table of classic crontab(5) examples with exact instants, and the expressions cron refuses."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dynoclock.config.problems import Invalid
from dynoclock.schedule.cron import next_after, normalize
from tests import cron_oracle

SEED = 20250309
N_GENERATED = 2400
CHUNK = 100
FIRES = 20
HORIZON = timedelta(days=8 * 366)  # compare fire times up to 8 years after the start


def at(text: str) -> datetime:
    """An instant written as ISO-8601 with an offset (``Z`` for UTC)."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value.astimezone(UTC)


def product_fires(expr: str, zone: ZoneInfo, after: datetime, count: int, until: datetime) -> list[datetime]:
    out: list[datetime] = []
    while len(out) < count:
        fire = next_after(expr, zone, after)
        if fire is None or fire > until:
            break
        assert fire.utcoffset() == timedelta(0), f"{expr!r}: {fire!r} is not in UTC"
        out.append(fire)
        after = fire
    return out


# --------------------------------------------------------------------------------------
# (a) Generated expressions, compared with tests/cron_oracle.py
# --------------------------------------------------------------------------------------

# Start instants per zone: ordinary moments, year ends before leap days, and moments just
# before a spring-forward, in the first pass and in the second pass of a fall-back hour.
ORDINARY = {
    "UTC": ["2025-06-14T09:41:27.5Z", "2024-02-28T23:59:59.999999Z", "2025-12-31T23:00:00Z", "2027-12-31T23:59:30Z"],
    "America/New_York": ["2025-06-14T09:41:27.5Z"],
    "Europe/London": ["2027-12-31T23:59:30Z"],
    "Australia/Sydney": ["2025-06-14T09:41:27.5Z"],
    "America/Santiago": ["2027-12-31T23:59:30Z"],
}
NEAR_TRANSITIONS = {
    "America/New_York": [
        "2025-03-09T05:50:00Z",  # 00:50 EST, 70 minutes before spring-forward
        "2026-11-01T04:10:00Z",  # 00:10 EDT, before fall-back
        "2026-11-01T05:35:00Z",  # 01:35 EDT, first pass of the repeated hour
        "2026-11-01T06:20:00.25Z",  # 01:20 EST, second pass
    ],
    "Europe/London": [
        "2025-03-30T00:20:00Z",  # 00:20 GMT, 40 minutes before spring-forward
        "2025-10-25T23:50:00Z",  # 00:50 BST, before fall-back
        "2025-10-26T00:15:00Z",  # 01:15 BST, first pass
        "2025-10-26T01:25:00Z",  # 01:25 GMT, second pass
    ],
    "Australia/Sydney": [
        "2025-10-04T15:10:00Z",  # 01:10 AEST, 50 minutes before spring-forward (October)
        "2026-04-04T14:40:00Z",  # 01:40 AEDT, before fall-back (April)
        "2026-04-04T15:20:00Z",  # 02:20 AEDT, first pass
        "2026-04-04T16:40:00Z",  # 02:40 AEST, second pass
    ],
    # Chile changes its clocks at midnight: 00:00-00:59 does not exist on spring-forward day,
    # and 23:00-23:59 of the Saturday repeats at fall-back.
    "America/Santiago": [
        "2025-09-07T02:10:00Z",  # 22:10 -04 on Saturday, before spring-forward
        "2026-04-05T01:50:00Z",  # 22:50 -03 on Saturday, before fall-back
        "2026-04-05T02:30:00Z",  # 23:30 -03, first pass
        "2026-04-05T03:20:00Z",  # 23:20 -04, second pass
    ],
}
ZONES = list(ORDINARY)
DST_CASES = [(zone, start) for zone, starts in NEAR_TRANSITIONS.items() for start in starts]
CASES = [(zone, start) for zone, starts in ORDINARY.items() for start in starts] + DST_CASES


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MACROS = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]

# Hand-picked expressions so that every form appears, whatever the random generator draws.
CLASSICS = [
    "5 4 * * 2",
    "0 9 * * mon-fri",
    "30 17 * * MON-FRI",
    "0 0 * * sat,sun",
    "0 0 * * 7",
    "0 12 * * 5-7",
    "15 3 * * 0-7/2",
    "0 0 * * Sun",
    "0 0 1 jan-mar *",
    "0 6 1 Jan,Jul *",
    "0 0 1 */3 *",
    "0 0 13 * 5",
    "0 0 1,15 * 3",
    "0 0 */2 * 1",
    "0 0 1-7 * */7",
    "0 22 * * 1-5",
    "23 0-20/2 * * *",
    "0-59/2 * * * *",
    "1-59/2 * * * *",
    "*/15 * * * *",
    "30 * * * *",
    "*/30 1-3 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "0,15,30,45 2 * * *",
    "30 2,3 * * *",
    "59 1 * * *",
    "0 0 * * *",
    "30 0 * * *",
    "*/10 0 * * *",
    "30 23 * * *",
    "*/20 23 * * 6",
    "0 0 31 * *",
    "0 0 29 2 *",
    "0 0 30 2 1",
    "5/15 3/6 * * *",
    "7-7/5 7-7/2 * * *",
    "0 12 10-10/3 * *",
    "0 0 * * mon-mon/2",
    "* * * * *",
    "0 */2 * * *",
    "*/15 1 * * *",
    "*/30 0 * * *",
    "0 */2 * * sun",  # Sunday-only jobs reach Chile's spring-forward Sunday from a day that does not match
    "*/15 1 * * 0",
    "*/30 0 * * 0",
    "15 23 * * *",
    "*/20 23 * * *",
    *MACROS,
    "@Daily",
    "@HOURLY",
]


def _render(rng: random.Random, value: int, names: Sequence[str], low: int) -> str:
    if names and value - low < len(names) and rng.random() < 0.4:
        name = names[value - low]
        return rng.choice([name, name.upper(), name.title()])
    return str(value)


def _field(rng: random.Random, low: int, high: int, names: Sequence[str] = (), hot: Sequence[int] = ()) -> str:
    """One field of 1-3 comma-separated items: values, ranges, and steps on *, ranges and values."""

    def value() -> int:
        return rng.choice(hot) if hot and rng.random() < 0.5 else rng.randint(low, high)

    def item() -> str:
        a = value()
        b = rng.randint(a, high)
        step = rng.choice([1, 2, 3, 4, 5, 6, 7, 10, 15, 20, 30, 45, 90])
        ra, rb = _render(rng, a, names, low), _render(rng, b, names, low)
        forms = {
            ra: 6,
            f"{ra}-{rb}": 4,
            f"*/{step}": 4,
            f"{ra}-{rb}/{step}": 4,
            f"{ra}/{step}": 2,
            f"{ra}-{ra}": 1,  # a one-value range
            f"{ra}-{ra}/{step}": 1,  # ... with a step: still one value
        }
        return rng.choices(list(forms), weights=list(forms.values()))[0]

    return ",".join(item() for _ in range(rng.choice([1, 1, 1, 1, 2, 2, 3])))


def _restricted(make: Callable[[], str]) -> str:
    """A field that does not start with "*", so that the day-of-month OR day-of-week rule applies."""
    while (text := make()).startswith("*"):
        pass
    return text


def generate_expression(rng: random.Random) -> str:
    if rng.random() < 0.03:
        macro = rng.choice(MACROS)
        return rng.choice([macro, macro.upper()])
    minute = "*" if rng.random() < 0.04 else _field(rng, 0, 59, hot=(0, 15, 30, 45, 59))
    hour = "*" if rng.random() < 0.2 else _field(rng, 0, 23, hot=(0, 1, 2, 3, 22, 23))
    month = "*" if rng.random() < 0.6 else _field(rng, 1, 12, MONTHS)

    def dom() -> str:
        return _field(rng, 1, 31, hot=(1, 13, 15, 28, 29, 30, 31))

    def dow() -> str:
        return _field(rng, 0, 7, DAYS, hot=(0, 5, 6, 7))

    rule = rng.random()
    if rule < 0.3:
        days = ["*", "*"]
    elif rule < 0.45:
        days = [dom(), "*"]  # either field starting with "*": AND
    elif rule < 0.6:
        days = ["*", dow()]
    elif rule < 0.85:
        days = [_restricted(dom), _restricted(dow)]  # both restricted: OR
    else:  # one field restricted yet starting with "*" (Debian: still AND)
        star = f"*/{rng.randint(2, 9)}" + ("," + _restricted(dom) if rng.random() < 0.3 else "")
        days = [star, _restricted(dow)] if rng.random() < 0.5 else [_restricted(dom), "*/" + str(rng.randint(2, 4))]
    return " ".join([minute, hour, days[0], month, days[1]])


def generated_expressions() -> list[str]:
    """CLASSICS, then random expressions, all of which normalize() accepts, up to N_GENERATED."""
    rng = random.Random(SEED)
    out = list(CLASSICS)
    while len(out) < N_GENERATED:
        expr = generate_expression(rng)
        try:
            normalize(expr)
        except Invalid:  # e.g. "0 0 30,31 2 *" never fires; the rejection table covers those
            continue
        out.append(expr)
    return out


EXPRESSIONS = generated_expressions()


def disagreement(expr: str, zone_name: str, start: str) -> str | None:
    """None if dynoclock and the oracle give the same next 20 fire times, else what differs."""
    zone, after = ZoneInfo(zone_name), at(start)
    until = after + HORIZON
    expected = cron_oracle.next_fires(expr, zone, after, FIRES, until)
    actual = product_fires(normalize(expr), zone, after, FIRES, until)
    if actual == expected:
        return None
    k = next((i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a), None)
    if k is None:
        detail = f"oracle gives {len(expected)} fire times, dynoclock {len(actual)}"
    else:
        detail = (
            f"fire #{k + 1}: oracle {expected[k].astimezone(zone).isoformat()}, "
            f"dynoclock {actual[k].astimezone(zone).isoformat()}"
        )
    return f"{expr!r} in {zone_name} after {start}: {detail}"


@pytest.mark.parametrize("first", range(0, N_GENERATED, CHUNK), ids=lambda i: f"expr{i:04d}-{i + CHUNK - 1:04d}")
def test_next_20_fire_times_match_debian_cron(first: int) -> None:
    """Each generated expression in one of all the cases, and in one of the cases near a clock change."""
    failures = []
    for index in range(first, min(first + CHUNK, len(EXPRESSIONS))):
        for zone, start in {CASES[index % len(CASES)], DST_CASES[index % len(DST_CASES)]}:
            if problem := disagreement(EXPRESSIONS[index], zone, start):
                failures.append(f"#{index} {problem}")
    assert not failures, f"{len(failures)} disagreements with Debian cron:\n" + "\n".join(failures)


@pytest.mark.parametrize("zone", ZONES)
def test_classic_expressions_match_debian_cron_from_every_start(zone: str) -> None:
    starts = ORDINARY[zone] + NEAR_TRANSITIONS.get(zone, [])
    failures = [p for expr in CLASSICS for start in starts if (p := disagreement(expr, zone, start))]
    assert not failures, f"{len(failures)} disagreements with Debian cron:\n" + "\n".join(failures)


def test_generated_expressions_cover_every_field_form() -> None:
    """A guard on the generator itself: every form of crontab(5) shows up in the comparison."""
    fields = [cron_oracle.MACROS.get(e.lower(), e).split() for e in EXPRESSIONS]
    items = [(i, item) for f in fields for i, field in enumerate(f) for item in field.split(",")]
    assert len(set(EXPRESSIONS)) > 0.95 * N_GENERATED
    assert any(e.lower() in cron_oracle.MACROS for e in EXPRESSIONS)
    assert any("," in f[0] for f in fields)  # lists
    for position in range(5):
        forms = {_form(item) for i, item in items if i == position}
        assert {"value", "range", "*/n", "a-b/n", "a/n"} <= forms, (position, forms)
    assert any(i == 3 and item[:1].isalpha() for i, item in items)  # month names
    assert any(i == 4 and "-" in item and item[:1].isalpha() for i, item in items)  # dow name ranges
    assert any(i == 4 and item.split("/")[0].endswith("7") and "-" in item for i, item in items)  # ranges ending in 7
    assert any(f[4] == "7" for f in fields)
    rules = {
        (f[2] == "*", f[4] == "*", f[2].startswith("*") or f[4].startswith("*"))
        for f in fields
        if not (f[2] == "*" and f[4] == "*")
    }
    assert {(False, True, True), (True, False, True), (False, False, False), (False, False, True)} <= rules
    assert {zone for zone, _ in CASES} == {
        "UTC",
        "America/New_York",
        "Europe/London",
        "Australia/Sydney",
        "America/Santiago",
    }


def _form(item: str) -> str:
    base, slash, _ = item.partition("/")
    if base == "*":
        return "*/n" if slash else "*"
    if "-" in base:
        return "a-b/n" if slash else "range"
    return "a/n" if slash else "value"


# --------------------------------------------------------------------------------------
# (b) Classic crontab examples, with the instants worked out by hand
# --------------------------------------------------------------------------------------

# From Wednesday 2025-01-01 00:00 UTC (exclusive).
NEW_YEAR_2025 = "2025-01-01T00:00:00Z"
EXAMPLES = [
    # "5 4 * * 2": 04:05 on Tuesdays (cron counts Sunday as 0).
    ("5 4 * * 2", "UTC", NEW_YEAR_2025, ["2025-01-07T04:05Z", "2025-01-14T04:05Z", "2025-01-21T04:05Z"]),
    ("0-59/2 * * * *", "UTC", NEW_YEAR_2025, ["2025-01-01T00:02Z", "2025-01-01T00:04Z", "2025-01-01T00:06Z"]),
    ("1-59/2 * * * *", "UTC", NEW_YEAR_2025, ["2025-01-01T00:01Z", "2025-01-01T00:03Z", "2025-01-01T00:05Z"]),
    (
        "5 4 * * 1-5",  # weekdays: Wed, Thu, Fri, then Monday
        "UTC",
        NEW_YEAR_2025,
        ["2025-01-01T04:05Z", "2025-01-02T04:05Z", "2025-01-03T04:05Z", "2025-01-06T04:05Z", "2025-01-07T04:05Z"],
    ),
    (
        "0 0 13 * 5",  # every Friday AND every 13th (both day fields restricted: OR)
        "UTC",
        NEW_YEAR_2025,
        [
            "2025-01-03T00:00Z",
            "2025-01-10T00:00Z",
            "2025-01-13T00:00Z",
            "2025-01-17T00:00Z",
            "2025-01-24T00:00Z",
            "2025-01-31T00:00Z",
            "2025-02-07T00:00Z",
            "2025-02-13T00:00Z",
            "2025-02-14T00:00Z",
        ],
    ),
    (
        "0 0 1,15 * 3",  # the 1st, the 15th, and Wednesdays
        "UTC",
        NEW_YEAR_2025,
        ["2025-01-08T00:00Z", "2025-01-15T00:00Z", "2025-01-22T00:00Z", "2025-01-29T00:00Z", "2025-02-01T00:00Z"],
    ),
    (
        "0 0 */2 * 1",  # day-of-month starts with "*": AND, so odd days that are Mondays
        "UTC",
        NEW_YEAR_2025,
        ["2025-01-13T00:00Z", "2025-01-27T00:00Z", "2025-02-03T00:00Z", "2025-02-17T00:00Z"],
    ),
    ("0 0 * * 7", "UTC", NEW_YEAR_2025, ["2025-01-05T00:00Z", "2025-01-12T00:00Z", "2025-01-19T00:00Z"]),
    ("0 0 * * 0", "UTC", NEW_YEAR_2025, ["2025-01-05T00:00Z", "2025-01-12T00:00Z", "2025-01-19T00:00Z"]),
    ("0 0 * * sun", "UTC", NEW_YEAR_2025, ["2025-01-05T00:00Z", "2025-01-12T00:00Z"]),
    (
        "0 12 * * 5-7",  # Friday to Sunday
        "UTC",
        NEW_YEAR_2025,
        ["2025-01-03T12:00Z", "2025-01-04T12:00Z", "2025-01-05T12:00Z", "2025-01-10T12:00Z"],
    ),
    ("@hourly", "UTC", NEW_YEAR_2025, ["2025-01-01T01:00Z", "2025-01-01T02:00Z", "2025-01-01T03:00Z"]),
    ("@daily", "UTC", NEW_YEAR_2025, ["2025-01-02T00:00Z", "2025-01-03T00:00Z", "2025-01-04T00:00Z"]),
    ("@midnight", "UTC", NEW_YEAR_2025, ["2025-01-02T00:00Z", "2025-01-03T00:00Z"]),
    ("@weekly", "UTC", NEW_YEAR_2025, ["2025-01-05T00:00Z", "2025-01-12T00:00Z", "2025-01-19T00:00Z"]),
    ("@monthly", "UTC", NEW_YEAR_2025, ["2025-02-01T00:00Z", "2025-03-01T00:00Z", "2025-04-01T00:00Z"]),
    ("@yearly", "UTC", NEW_YEAR_2025, ["2026-01-01T00:00Z", "2027-01-01T00:00Z", "2028-01-01T00:00Z"]),
    ("@annually", "UTC", NEW_YEAR_2025, ["2026-01-01T00:00Z", "2027-01-01T00:00Z"]),
    (
        "0 22 * * 1-5",  # 22:00 on weekdays
        "UTC",
        NEW_YEAR_2025,
        ["2025-01-01T22:00Z", "2025-01-02T22:00Z", "2025-01-03T22:00Z", "2025-01-06T22:00Z"],
    ),
    (
        "23 0-20/2 * * *",  # 23 minutes past midnight, 2am, 4am ..., 8pm
        "UTC",
        NEW_YEAR_2025,
        [f"2025-01-01T{h:02d}:23Z" for h in range(0, 21, 2)] + ["2025-01-02T00:23Z"],
    ),
    (
        "0 0 31 * *",  # skips the 30-day months and February
        "UTC",
        NEW_YEAR_2025,
        [
            "2025-01-31T00:00Z",
            "2025-03-31T00:00Z",
            "2025-05-31T00:00Z",
            "2025-07-31T00:00Z",
            "2025-08-31T00:00Z",
            "2025-10-31T00:00Z",
            "2025-12-31T00:00Z",
            "2026-01-31T00:00Z",
        ],
    ),
    ("0 0 29 2 *", "UTC", NEW_YEAR_2025, ["2028-02-29T00:00Z", "2032-02-29T00:00Z", "2036-02-29T00:00Z"]),
    ("0 0 1 jan-mar *", "UTC", NEW_YEAR_2025, ["2025-02-01T00:00Z", "2025-03-01T00:00Z", "2026-01-01T00:00Z"]),
    ("7-7/5 7-7/2 * * *", "UTC", NEW_YEAR_2025, ["2025-01-01T07:07Z", "2025-01-02T07:07Z"]),  # one-value ranges
    (
        "30 17 * * mon-fri",  # 17:30 New York time: 22:30 UTC in winter
        "America/New_York",
        NEW_YEAR_2025,
        ["2025-01-01T22:30Z", "2025-01-02T22:30Z", "2025-01-03T22:30Z", "2025-01-06T22:30Z"],
    ),
    ("0 9 * * *", "Europe/London", "2025-07-01T00:00:00Z", ["2025-07-01T08:00Z", "2025-07-02T08:00Z"]),  # BST
]


@pytest.mark.parametrize(("expr", "zone", "after", "expected"), EXAMPLES, ids=[f"{e[0]} {e[1]}" for e in EXAMPLES])
def test_classic_crontab_examples(expr: str, zone: str, after: str, expected: list[str]) -> None:
    want = [at(t) for t in expected]
    until = at(after) + timedelta(days=20 * 366)
    assert product_fires(normalize(expr), ZoneInfo(zone), at(after), len(want), until) == want
    # The oracle must agree too, or the generated comparison would prove nothing.
    assert cron_oracle.next_fires(expr, ZoneInfo(zone), at(after), len(want), until) == want


def test_normalize_lowercases_and_expands_macros() -> None:
    assert normalize("  30   17 * *   MON-FRI ") == "30 17 * * mon-fri"
    assert normalize("0 0 1 JAN,Jul *") == "0 0 1 jan,jul *"
    assert normalize("@Weekly") == "0 0 * * 0"
    assert normalize("@annually") == normalize("@yearly") == "0 0 1 1 *"
    assert normalize("@midnight") == normalize("@daily") == "0 0 * * *"
    assert normalize("@hourly") == "0 * * * *"
    assert normalize("@monthly") == "0 0 1 * *"


# --------------------------------------------------------------------------------------
# (c) What Debian cron refuses, refused with a message that names the field
# --------------------------------------------------------------------------------------

REJECTED = [
    ("0 0 * * 8", "bad day-of-week"),
    ("0 0 * * 1-8", "bad day-of-week"),
    ("0 0 * * 7-1", "bad day-of-week range"),
    ("0 0 * * 5#2", "bad day-of-week"),
    ("0 0 * * 5L", "bad day-of-week"),
    ("0 0 * * 1W", "bad day-of-week"),
    ("0 0 * * monday", "bad day-of-week"),
    ("0 0 * * jan", "bad day-of-week"),
    ("60 * * * *", "bad minute"),
    ("5-1 * * * *", "bad minute range"),
    ("*/0 * * * *", "bad minute step"),
    ("jan * * * *", "bad minute"),
    ("mon * * * *", "bad minute"),
    ("-5 * * * *", "bad minute"),
    ("1,,2 * * * *", "bad minute"),
    ("*/ * * * *", "bad minute"),
    ("0.5 * * * *", "bad minute"),
    ("* 24 * * *", "bad hour"),
    ("0 mon * * *", "bad hour"),
    ("0 */0 * * *", "bad hour step"),
    ("0 0 0 * *", "bad day-of-month"),
    ("0 0 32 * *", "bad day-of-month"),
    ("0 0 1-32 * *", "bad day-of-month"),
    ("0 0 L * *", "bad day-of-month"),
    ("0 0 LW * *", "bad day-of-month"),
    ("0 0 15W * *", "bad day-of-month"),
    ("0 0 ? * *", "bad day-of-month"),
    ("0 0 * 13 *", "bad month"),
    ("0 0 * 0 *", "bad month"),
    ("0 0 * january *", "bad month"),
    ("0 0 * mon *", "bad month"),
    ("0 0 * dec-jan *", "bad month range"),
    ("0 0 0 * * *", "expected 5 fields"),
    ("0 0 * * * 2025", "expected 5 fields"),
    ("0 0 * *", "expected 5 fields"),
    ("", "expected 5 fields"),
    ("@reboot", "@reboot"),
    ("@often", "unknown macro"),
    ("@every 5m", "unknown macro"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("0 0 30-31 2 *", "never fires"),
]


@pytest.mark.parametrize(("expr", "message"), REJECTED, ids=[r[0] or "empty" for r in REJECTED])
def test_normalize_rejects_what_cron_rejects(expr: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        normalize(expr)
