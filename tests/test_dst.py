"""Cron jobs across daylight-saving changes, Debian cron's way.

Fixed-time jobs (neither minute nor hour starts with "*") run once per day: a time that
spring-forward skips runs at the change, a time that fall-back repeats runs at its first
occurrence. Wildcard jobs run at every real instant that matches: never at a time that does
not exist, and in both passes of a repeated hour. Expected instants are written out by hand
in UTC ("Z"), with the local reading in a comment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dynoclock.schedule.cron import next_after, normalize
from dynoclock.schedule.triggers import CronTrigger, upcoming
from tests import cron_oracle

NY, LONDON, SYDNEY = "America/New_York", "Europe/London", "Australia/Sydney"
SANTIAGO, LORD_HOWE = "America/Santiago", "Australia/Lord_Howe"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fires(zone: str, expr: str, after: str, count: int) -> list[datetime]:
    return upcoming(CronTrigger(normalize(expr), ZoneInfo(zone)), at(after), count)


def check(zone: str, expr: str, after: str, expected: list[str]) -> None:
    assert fires(zone, expr, after, len(expected)) == [at(t) for t in expected]


# A fixed time inside the hour that spring-forward skips: one run, at the change, every year.
SKIPPED_FIXED = [
    # New York, 02:00 EST -> 03:00 EDT: 02:30 runs at 03:00 EDT (07:00Z); next day 02:30 EDT (06:30Z).
    (NY, "30 2 * * *", "2024-03-09T12:00Z", ["2024-03-10T07:00Z", "2024-03-11T06:30Z"]),
    (NY, "30 2 * * *", "2025-03-08T12:00Z", ["2025-03-09T07:00Z", "2025-03-10T06:30Z"]),
    (NY, "30 2 * * *", "2026-03-07T12:00Z", ["2026-03-08T07:00Z", "2026-03-09T06:30Z"]),
    (NY, "30 2 * * *", "2027-03-13T12:00Z", ["2027-03-14T07:00Z", "2027-03-15T06:30Z"]),
    (NY, "30 2 * * *", "2028-03-11T12:00Z", ["2028-03-12T07:00Z", "2028-03-13T06:30Z"]),
    # London, 01:00 GMT -> 02:00 BST: 01:30 runs at 02:00 BST (01:00Z); next day 01:30 BST (00:30Z).
    (LONDON, "30 1 * * *", "2024-03-30T12:00Z", ["2024-03-31T01:00Z", "2024-04-01T00:30Z"]),
    (LONDON, "30 1 * * *", "2025-03-29T12:00Z", ["2025-03-30T01:00Z", "2025-03-31T00:30Z"]),
    (LONDON, "30 1 * * *", "2026-03-28T12:00Z", ["2026-03-29T01:00Z", "2026-03-30T00:30Z"]),
    (LONDON, "30 1 * * *", "2027-03-27T12:00Z", ["2027-03-28T01:00Z", "2027-03-29T00:30Z"]),
    (LONDON, "30 1 * * *", "2028-03-25T12:00Z", ["2028-03-26T01:00Z", "2028-03-27T00:30Z"]),
    # Sydney, first Sunday of October, 02:00 AEST -> 03:00 AEDT: 02:30 runs at 03:00 AEDT
    # (16:00Z the day before); next day 02:30 AEDT (15:30Z).
    (SYDNEY, "30 2 * * *", "2024-10-05T00:00Z", ["2024-10-05T16:00Z", "2024-10-06T15:30Z"]),
    (SYDNEY, "30 2 * * *", "2025-10-04T00:00Z", ["2025-10-04T16:00Z", "2025-10-05T15:30Z"]),
    (SYDNEY, "30 2 * * *", "2026-10-03T00:00Z", ["2026-10-03T16:00Z", "2026-10-04T15:30Z"]),
    (SYDNEY, "30 2 * * *", "2027-10-02T00:00Z", ["2027-10-02T16:00Z", "2027-10-03T15:30Z"]),
    (SYDNEY, "30 2 * * *", "2028-09-30T00:00Z", ["2028-09-30T16:00Z", "2028-10-01T15:30Z"]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), SKIPPED_FIXED)
def test_spring_forward_runs_skipped_fixed_time_once_at_the_change(zone, expr, after, expected) -> None:
    check(zone, expr, after, expected)


# A fixed time inside the hour that fall-back repeats: exactly one run that day, the first.
REPEATED_FIXED = [
    # New York, 02:00 EDT -> 01:00 EST: 01:30 EDT (05:30Z) only; next day 01:30 EST (06:30Z).
    (NY, "30 1 * * *", "2024-11-02T12:00Z", ["2024-11-03T05:30Z", "2024-11-04T06:30Z"]),
    (NY, "30 1 * * *", "2025-11-01T12:00Z", ["2025-11-02T05:30Z", "2025-11-03T06:30Z"]),
    (NY, "30 1 * * *", "2026-10-31T12:00Z", ["2026-11-01T05:30Z", "2026-11-02T06:30Z"]),
    (NY, "30 1 * * *", "2027-11-06T12:00Z", ["2027-11-07T05:30Z", "2027-11-08T06:30Z"]),
    (NY, "30 1 * * *", "2028-11-04T12:00Z", ["2028-11-05T05:30Z", "2028-11-06T06:30Z"]),
    # London, 02:00 BST -> 01:00 GMT: 01:30 BST (00:30Z) only; next day 01:30 GMT (01:30Z).
    (LONDON, "30 1 * * *", "2024-10-26T12:00Z", ["2024-10-27T00:30Z", "2024-10-28T01:30Z"]),
    (LONDON, "30 1 * * *", "2025-10-25T12:00Z", ["2025-10-26T00:30Z", "2025-10-27T01:30Z"]),
    (LONDON, "30 1 * * *", "2026-10-24T12:00Z", ["2026-10-25T00:30Z", "2026-10-26T01:30Z"]),
    (LONDON, "30 1 * * *", "2027-10-30T12:00Z", ["2027-10-31T00:30Z", "2027-11-01T01:30Z"]),
    (LONDON, "30 1 * * *", "2028-10-28T12:00Z", ["2028-10-29T00:30Z", "2028-10-30T01:30Z"]),
    # Sydney, first Sunday of April, 03:00 AEDT -> 02:00 AEST: 02:30 AEDT (15:30Z the day
    # before) only; next day 02:30 AEST (16:30Z).
    (SYDNEY, "30 2 * * *", "2024-04-06T00:00Z", ["2024-04-06T15:30Z", "2024-04-07T16:30Z"]),
    (SYDNEY, "30 2 * * *", "2025-04-05T00:00Z", ["2025-04-05T15:30Z", "2025-04-06T16:30Z"]),
    (SYDNEY, "30 2 * * *", "2026-04-04T00:00Z", ["2026-04-04T15:30Z", "2026-04-05T16:30Z"]),
    (SYDNEY, "30 2 * * *", "2027-04-03T00:00Z", ["2027-04-03T15:30Z", "2027-04-04T16:30Z"]),
    (SYDNEY, "30 2 * * *", "2028-04-01T00:00Z", ["2028-04-01T15:30Z", "2028-04-02T16:30Z"]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), REPEATED_FIXED)
def test_fall_back_runs_fixed_time_once(zone, expr, after, expected) -> None:
    check(zone, expr, after, expected)


def test_fall_back_runs_each_fixed_minute_of_the_repeated_hour_once() -> None:
    # 01:00 and 01:30 EDT (05:00Z, 05:30Z), not again in EST; next day 01:00 and 01:30 EST.
    check(
        NY,
        "0,30 1 * * *",
        "2025-11-01T12:00Z",
        ["2025-11-02T05:00Z", "2025-11-02T05:30Z", "2025-11-03T06:00Z", "2025-11-03T06:30Z"],
    )


def test_spring_forward_collapses_several_skipped_times_into_one_run() -> None:
    # 02:00, 02:15, 02:30 and 02:45 do not exist on 2025-03-09: one run at 03:00 EDT (07:00Z).
    check(
        NY,
        "0,15,30,45 2 * * *",
        "2025-03-08T12:00Z",
        ["2025-03-09T07:00Z", "2025-03-10T06:00Z", "2025-03-10T06:15Z", "2025-03-10T06:30Z", "2025-03-10T06:45Z"],
    )


def test_spring_forward_skipped_time_and_time_after_the_change_both_run() -> None:
    # 02:30 (skipped) runs at 03:00 EDT, 03:30 EDT runs as usual.
    check(
        NY,
        "30 2,3 * * *",
        "2025-03-08T12:00Z",
        ["2025-03-09T07:00Z", "2025-03-09T07:30Z", "2025-03-10T06:30Z", "2025-03-10T07:30Z"],
    )


WILDCARD = [
    # New York fall-back 2025-11-02: 01:00 EDT, 01:30 EDT, 01:00 EST, 01:30 EST, 02:00 EST.
    (
        NY,
        "*/30 * * * *",
        "2025-11-02T04:45Z",
        ["2025-11-02T05:00Z", "2025-11-02T05:30Z", "2025-11-02T06:00Z", "2025-11-02T06:30Z", "2025-11-02T07:00Z"],
    ),
    # 01:30 EDT, 01:30 EST, 02:30 EST.
    (NY, "30 * * * *", "2025-11-02T04:45Z", ["2025-11-02T05:30Z", "2025-11-02T06:30Z", "2025-11-02T07:30Z"]),
    # 01:00, 01:20, 01:40 EDT then EST; next day 01:00 EST.
    (
        NY,
        "*/20 1 * * *",
        "2026-10-31T12:00Z",
        [
            "2026-11-01T05:00Z",
            "2026-11-01T05:20Z",
            "2026-11-01T05:40Z",
            "2026-11-01T06:00Z",
            "2026-11-01T06:20Z",
            "2026-11-01T06:40Z",
            "2026-11-02T06:00Z",
        ],
    ),
    # London fall-back 2025-10-26: 01:00 BST, 01:30 BST, 01:00 GMT, 01:30 GMT, 02:00 GMT.
    (
        LONDON,
        "*/30 * * * *",
        "2025-10-25T23:45Z",
        ["2025-10-26T00:00Z", "2025-10-26T00:30Z", "2025-10-26T01:00Z", "2025-10-26T01:30Z", "2025-10-26T02:00Z"],
    ),
    # Sydney fall-back 2025-04-06 (03:00 AEDT -> 02:00 AEST): 02:30 AEDT, 02:30 AEST, 03:30 AEST.
    (SYDNEY, "30 * * * *", "2025-04-05T14:45Z", ["2025-04-05T15:30Z", "2025-04-05T16:30Z", "2025-04-05T17:30Z"]),
    (
        SYDNEY,
        "*/30 2 * * *",
        "2027-04-03T12:00Z",  # 02:00, 02:30 AEDT then AEST on 2027-04-04; next day 02:00 AEST
        ["2027-04-03T15:00Z", "2027-04-03T15:30Z", "2027-04-03T16:00Z", "2027-04-03T16:30Z", "2027-04-04T16:00Z"],
    ),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), WILDCARD)
def test_fall_back_runs_wildcard_times_in_both_passes(zone, expr, after, expected) -> None:
    check(zone, expr, after, expected)


NONEXISTENT = [
    # New York spring-forward 2025-03-09: 01:30 EST, (no 02:30), 03:30 EDT, 04:30 EDT.
    (NY, "30 * * * *", "2025-03-09T05:45Z", ["2025-03-09T06:30Z", "2025-03-09T07:30Z", "2025-03-09T08:30Z"]),
    # 01:30 EST, (no 02:00, 02:30), 03:00 EDT, 03:30 EDT.
    (NY, "*/30 * * * *", "2025-03-09T06:15Z", ["2025-03-09T06:30Z", "2025-03-09T07:00Z", "2025-03-09T07:30Z"]),
    # Nothing on 2026-03-08 at all: 02:xx does not exist. Next: 02:00 EDT on 03-09.
    (NY, "*/20 2 * * *", "2026-03-07T12:00Z", ["2026-03-09T06:00Z", "2026-03-09T06:20Z", "2026-03-09T06:40Z"]),
    # London spring-forward 2025-03-30: 00:30 GMT, (no 01:30), 02:30 BST.
    (LONDON, "30 * * * *", "2025-03-29T23:45Z", ["2025-03-30T00:30Z", "2025-03-30T01:30Z", "2025-03-30T02:30Z"]),
    # Sydney spring-forward 2025-10-05: 01:30 AEST, (no 02:00, 02:30), 03:00 AEDT, 03:30 AEDT.
    (SYDNEY, "*/30 * * * *", "2025-10-04T15:15Z", ["2025-10-04T15:30Z", "2025-10-04T16:00Z", "2025-10-04T16:30Z"]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), NONEXISTENT)
def test_spring_forward_never_runs_wildcard_at_a_nonexistent_time(zone, expr, after, expected) -> None:
    check(zone, expr, after, expected)


DAILY_9AM = [
    # New York: 09:00 EST is 14:00Z, 09:00 EDT is 13:00Z.
    (NY, "2025-03-07T12:00Z", ["2025-03-07T14:00Z", "2025-03-08T14:00Z", "2025-03-09T13:00Z", "2025-03-10T13:00Z"]),
    (NY, "2025-10-31T12:00Z", ["2025-10-31T13:00Z", "2025-11-01T13:00Z", "2025-11-02T14:00Z", "2025-11-03T14:00Z"]),
    # London: 09:00 GMT is 09:00Z, 09:00 BST is 08:00Z.
    (LONDON, "2025-03-28T12:00Z", ["2025-03-29T09:00Z", "2025-03-30T08:00Z", "2025-03-31T08:00Z"]),
    (LONDON, "2025-10-24T12:00Z", ["2025-10-25T08:00Z", "2025-10-26T09:00Z", "2025-10-27T09:00Z"]),
    # Sydney: 09:00 AEDT is 22:00Z the day before, 09:00 AEST is 23:00Z the day before.
    (SYDNEY, "2025-04-04T12:00Z", ["2025-04-04T22:00Z", "2025-04-05T23:00Z", "2025-04-06T23:00Z"]),
    (SYDNEY, "2025-10-03T12:00Z", ["2025-10-03T23:00Z", "2025-10-04T22:00Z", "2025-10-05T22:00Z"]),
]


@pytest.mark.parametrize(("zone", "after", "expected"), DAILY_9AM)
def test_daily_job_keeps_its_wall_clock_time_across_transitions(zone, after, expected) -> None:
    got = fires(zone, "0 9 * * *", after, len(expected))
    assert got == [at(t) for t in expected]
    assert {t.astimezone(ZoneInfo(zone)).strftime("%H:%M") for t in got} == {"09:00"}


# Zones where cronsim's own handling of wildcard jobs went wrong (fixed in dynoclock.schedule.cron):
# Chile changes clocks at midnight (00:00 -04 -> 01:00 -03 on Sunday 2025-09-07; 24:00 -03 ->
# 23:00 -04 on Saturday 2026-04-04), Lord Howe Island by 30 minutes (02:00 +11 -> 01:30 +10:30
# on 2025-04-06; 02:00 +10:30 -> 02:30 +11 on 2025-10-05).
ODD_ZONES = [
    # 01:00-01:45 -03 exist on spring-forward Sunday (cronsim jumped to the next Sunday).
    (SANTIAGO, "*/15 1 * * 0", "2025-09-06T12:00Z", ["2025-09-07T04:00Z", "2025-09-07T04:15Z", "2025-09-07T04:30Z"]),
    # 00:00 does not exist; 02:00 -03 is the first even hour (cronsim invented a run at 01:00).
    (SANTIAGO, "0 */2 * * sun", "2025-09-06T12:00Z", ["2025-09-07T05:00Z", "2025-09-07T07:00Z"]),
    # No 00:00 or 00:30 on 2025-09-07: next Sunday, 00:00 -03 (cronsim invented 01:00).
    (SANTIAGO, "*/30 0 * * 0", "2025-09-06T12:00Z", ["2025-09-14T03:00Z", "2025-09-14T03:30Z"]),
    # Fixed: 00:30 runs at the change, 01:00 -03; next day 00:30 -03.
    (SANTIAGO, "30 0 * * *", "2025-09-06T12:00Z", ["2025-09-07T04:00Z", "2025-09-08T03:30Z"]),
    # 23:00, 23:30 -03, then 23:00, 23:30 -04 on Saturday 2026-04-04; then Sunday 23:00 -04.
    (
        SANTIAGO,
        "*/30 23 * * *",
        "2026-04-04T12:00Z",
        ["2026-04-05T02:00Z", "2026-04-05T02:30Z", "2026-04-05T03:00Z", "2026-04-05T03:30Z", "2026-04-06T03:00Z"],
    ),
    (SANTIAGO, "30 23 * * *", "2026-04-04T12:00Z", ["2026-04-05T02:30Z", "2026-04-06T03:30Z"]),
    # 00:00 +11, then 02:00, 04:00, 06:00 +10:30 (cronsim stayed on :30 past the hour all day).
    (
        LORD_HOWE,
        "0 */2 * * *",
        "2025-04-05T12:00Z",
        ["2025-04-05T13:00Z", "2025-04-05T15:30Z", "2025-04-05T17:30Z", "2025-04-05T19:30Z"],
    ),
    # 01:00, 01:15, 01:30, 01:45 +11, then 01:30, 01:45 +10:30; next day 01:00 +10:30.
    (
        LORD_HOWE,
        "*/15 1 * * *",
        "2025-04-05T12:00Z",
        [
            "2025-04-05T14:00Z",
            "2025-04-05T14:15Z",
            "2025-04-05T14:30Z",
            "2025-04-05T14:45Z",
            "2025-04-05T15:00Z",
            "2025-04-05T15:15Z",
            "2025-04-06T14:30Z",
        ],
    ),
    (LORD_HOWE, "45 1 * * *", "2025-04-05T12:00Z", ["2025-04-05T14:45Z", "2025-04-06T15:15Z"]),
    # 02:00 and 02:15 do not exist: 02:30, 02:45 +11; next day 02:00 +11.
    (LORD_HOWE, "*/15 2 * * *", "2025-10-04T12:00Z", ["2025-10-04T15:30Z", "2025-10-04T15:45Z", "2025-10-05T15:00Z"]),
    (LORD_HOWE, "15 2 * * *", "2025-10-04T12:00Z", ["2025-10-04T15:30Z", "2025-10-05T15:15Z"]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), ODD_ZONES)
def test_clock_changes_at_midnight_or_by_half_an_hour(zone, expr, after, expected) -> None:
    check(zone, expr, after, expected)


# --------------------------------------------------------------------------------------
# Property: next_after is strictly after `after`, and the first fire time, near every change
# --------------------------------------------------------------------------------------

PROPERTY_EXPRESSIONS = [
    "30 1 * * *",
    "30 2 * * *",
    "59 1 * * *",
    "0 2 * * *",
    "0,30 1-3 * * *",
    "30 23 * * *",
    "30 0 * * *",
    "*/30 * * * *",
    "30 * * * *",
    "* * * * *",
    "*/7 1-3 * * *",
    "0 */2 * * *",
]


def transitions(zone: ZoneInfo, first_year: int, last_year: int) -> list[datetime]:
    """The instants at which the zone's UTC offset changes (to the minute), found by scanning."""
    out = []
    t = datetime(first_year, 1, 1, tzinfo=UTC)
    while t.year <= last_year:
        step = t + timedelta(hours=1)
        if t.astimezone(zone).utcoffset() != step.astimezone(zone).utcoffset():
            while t.astimezone(zone).utcoffset() == (t + timedelta(minutes=1)).astimezone(zone).utcoffset():
                t += timedelta(minutes=1)
            out.append(t + timedelta(minutes=1))
        t = step
    return out


def afters_around(change: datetime) -> list[datetime]:
    """Instants from 3 hours before to 3 hours after a change: on the minute, off it, and 1 µs either side."""
    out = [change + timedelta(minutes=k * 9, seconds=s) for k in range(-20, 21) for s in (0, 29.5)]
    return sorted([*out, change - timedelta(microseconds=1), change + timedelta(microseconds=1)])


@pytest.mark.parametrize("zone_name", [NY, LONDON, SYDNEY, SANTIAGO, LORD_HOWE])
def test_next_after_is_strictly_after_and_first_around_every_change(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    changes = transitions(zone, 2024, 2028)
    assert len(changes) == 10
    failures, second_pass = [], 0
    for change in changes:
        afters = afters_around(change)
        for expr in PROPERTY_EXPRESSIONS:
            # Every fire time from before the first sample to well after the last, once per change.
            first, last = afters[0] - timedelta(hours=1), afters[-1] + timedelta(days=2)
            expected = list(cron_oracle.fire_times(expr, zone, first, last))
            for after in afters:
                got = next_after(expr, zone, after)
                want = next((t for t in expected if t > after), None)
                local = after.astimezone(zone)
                if local.fold:
                    second_pass += 1
                    # The same instant written in local time, fold=1, gives the same answer.
                    assert next_after(expr, zone, local) == got
                if got is None or got <= after or got != want:
                    failures.append(
                        f"{expr!r} after {after.isoformat()} ({local.isoformat()} fold={local.fold}): "
                        f"got {got and got.astimezone(zone).isoformat()}, "
                        f"want {want and want.astimezone(zone).isoformat()}"
                    )
    assert second_pass >= 20  # the samples do include the second pass of repeated hours
    assert not failures, f"{len(failures)} wrong answers:\n" + "\n".join(failures[:20])


def test_the_same_wall_time_in_both_passes_of_a_fall_back_gives_each_its_own_next_run() -> None:
    # New York falls back on 2025-11-02: 01:10 EDT (05:10Z) and 01:10 EST (06:10Z) share their wall time and zone,
    # so Python compares them as equal. Asked in that order, and in the other, each answer is its own.
    zone = ZoneInfo(NY)
    first = datetime(2025, 11, 2, 1, 10, tzinfo=zone)
    second = first.replace(fold=1)
    expr = normalize("*/30 * * * *")
    for asked in ([first, second], [second, first]):
        answers = {moment.fold: next_after(expr, zone, moment) for moment in asked}
        assert answers == {
            0: datetime(2025, 11, 2, 5, 30, tzinfo=UTC),  # 01:30 EDT
            1: datetime(2025, 11, 2, 6, 30, tzinfo=UTC),  # 01:30 EST
        }
