"""Interval, one-off and window triggers, and jitter: slots that every clock computes alike.

Slots are anchored to the Unix epoch (or an explicit anchor), never to process start, so two
clocks started at different moments, or one clock restarted daily, agree on every slot.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dynoclock.schedule.cron import normalize
from dynoclock.schedule.triggers import EPOCH, AtTrigger, CronTrigger, EveryTrigger, Window, jitter_offset, upcoming

NY = ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def ats(*texts: str) -> list[datetime]:
    return [at(t) for t in texts]


# --------------------------------------------------------------------------------------
# every: anchored slots
# --------------------------------------------------------------------------------------


def test_every_15_minutes_fires_on_the_quarter_hours() -> None:
    every = EveryTrigger(timedelta(minutes=15))
    assert upcoming(every, at("2025-06-01T10:03:17.25Z"), 5) == ats(
        "2025-06-01T10:15Z", "2025-06-01T10:30Z", "2025-06-01T10:45Z", "2025-06-01T11:00Z", "2025-06-01T11:15Z"
    )


def test_every_slot_is_strictly_after_the_given_instant() -> None:
    every = EveryTrigger(timedelta(minutes=15))
    assert every.next_after(at("2025-06-01T10:15:00Z")) == at("2025-06-01T10:30Z")
    assert every.next_after(at("2025-06-01T10:14:59.999999Z")) == at("2025-06-01T10:15Z")
    assert every.next_after(at("2025-06-01T10:15:00.000001Z")) == at("2025-06-01T10:30Z")


def test_every_slots_are_utc_instants_whatever_zone_the_caller_uses() -> None:
    every = EveryTrigger(timedelta(minutes=10))
    slot = every.next_after(datetime(2025, 6, 1, 6, 3, tzinfo=NY))  # 10:03Z
    assert slot == at("2025-06-01T10:10Z")
    assert slot is not None and slot.utcoffset() == timedelta(0)


def test_every_counts_absolute_time_across_dst() -> None:
    # every: 1d is 24 hours: midnight UTC, 19:00 EST then 20:00 EDT in New York.
    assert upcoming(EveryTrigger(timedelta(days=1)), at("2025-03-07T12:00Z"), 4) == ats(
        "2025-03-08T00:00Z", "2025-03-09T00:00Z", "2025-03-10T00:00Z", "2025-03-11T00:00Z"
    )


def test_every_with_an_explicit_anchor_fires_at_anchor_plus_whole_intervals() -> None:
    hourly_at_7 = EveryTrigger(timedelta(hours=1), anchor=at("2025-01-01T00:07:00Z"))
    assert upcoming(hourly_at_7, at("2025-06-01T10:03:17.25Z"), 3) == ats(
        "2025-06-01T10:07Z", "2025-06-01T11:07Z", "2025-06-01T12:07Z"
    )
    odd = EveryTrigger(timedelta(seconds=90), anchor=at("2025-03-03T03:03:03.5Z"))
    assert upcoming(odd, at("2025-03-03T03:03:03.5Z"), 3) == ats(
        "2025-03-03T03:04:33.5Z", "2025-03-03T03:06:03.5Z", "2025-03-03T03:07:33.5Z"
    )


def test_every_slots_before_a_future_anchor_follow_the_same_grid() -> None:
    every = EveryTrigger(timedelta(hours=1), anchor=at("2030-01-01T00:20:00Z"))
    assert every.next_after(at("2025-06-01T10:03:17Z")) == at("2025-06-01T10:20Z")


def test_every_anchor_written_in_local_time_is_the_same_instant() -> None:
    # 09:00 EST on 2025-01-01 is 14:00Z: hourly slots on the hour, in summer too.
    local = EveryTrigger(timedelta(hours=1), anchor=datetime(2025, 1, 1, 9, 0, tzinfo=NY))
    utc = EveryTrigger(timedelta(hours=1), anchor=at("2025-01-01T14:00:00Z"))
    after = at("2025-06-01T12:00:30Z")
    assert local.next_after(after) == utc.next_after(after) == at("2025-06-01T13:00Z")
    assert upcoming(local, after, 3) == ats("2025-06-01T13:00Z", "2025-06-01T14:00Z", "2025-06-01T15:00Z")


INTERVALS = [
    timedelta(milliseconds=250),
    timedelta(seconds=90),
    timedelta(minutes=7),
    timedelta(minutes=15),
    timedelta(hours=1, minutes=30),
    timedelta(days=1),
    timedelta(days=3),
]


def slots_between(trigger: EveryTrigger, after: datetime, end: datetime) -> list[datetime]:
    """What one process computes: slot after slot, from its own start instant."""
    out = []
    slot = trigger.next_after(after)
    while slot is not None and slot <= end:
        out.append(slot)
        slot = trigger.next_after(slot)
    return out


@pytest.mark.parametrize("interval", INTERVALS, ids=str)
def test_processes_started_at_different_times_agree_on_every_slot(interval: timedelta) -> None:
    restart = at("2025-06-01T10:12:00.000001Z")  # process A, restarted: a fresh trigger, a fresh start
    end = restart + 150 * interval
    process_a = slots_between(EveryTrigger(interval), at("2025-06-01T10:03:17.25Z"), end)
    process_b = slots_between(EveryTrigger(interval), at("2025-06-01T10:11:59.9Z"), end)
    restarted = slots_between(EveryTrigger(interval), restart, end)
    common = [[s for s in slots if s > restart] for slots in (process_a, process_b, restarted)]
    assert common[0] == common[1] == common[2]
    assert len(common[0]) == 150
    assert all((s - EPOCH) % interval == timedelta(0) for s in common[0])


# 3-day slots from the epoch: day 20238 (2025-05-30) is a multiple of 3.
THREE_DAY_SLOTS = ats(
    "2025-05-30T00:00Z",
    "2025-06-02T00:00Z",
    "2025-06-05T00:00Z",
    "2025-06-08T00:00Z",
    "2025-06-11T00:00Z",
    "2025-06-14T00:00Z",
    "2025-06-17T00:00Z",
    "2025-06-20T00:00Z",
)


def test_every_3_days_slots_do_not_depend_on_the_start() -> None:
    every = EveryTrigger(timedelta(days=3))
    after = at("2025-05-29T23:59:59.999999Z")
    while after < at("2025-06-11T00:00Z"):
        assert every.next_after(after) == next(s for s in THREE_DAY_SLOTS if s > after), after
        after += timedelta(hours=5, minutes=17, seconds=3, microseconds=500)


def test_every_3_days_fires_although_the_clock_restarts_daily() -> None:
    """Heroku restarts dynos every 24 h plus up to 216 minutes: every slot must still run once."""
    boots = [at("2025-05-29T04:13:00Z")]
    for i in range(18):
        boots.append(boots[-1] + timedelta(hours=24, minutes=(i * 37) % 216))
    ran = []
    for boot, shutdown in itertools.pairwise(boots):
        every = EveryTrigger(timedelta(days=3))  # a fresh process knows nothing of the last one
        slot = every.next_after(boot)
        while slot is not None and slot < shutdown:
            ran.append(slot)
            slot = every.next_after(slot)
    assert boots[-1] < THREE_DAY_SLOTS[-1]
    assert ran == [s for s in THREE_DAY_SLOTS if boots[0] < s < boots[-1]]
    assert len(ran) >= 6


# --------------------------------------------------------------------------------------
# Windows, one-off runs
# --------------------------------------------------------------------------------------

HOURLY = EveryTrigger(timedelta(hours=1))


def test_window_includes_slots_on_its_start_and_end() -> None:
    window = Window(start=at("2025-06-01T10:00Z"), end=at("2025-06-01T13:00Z"))
    assert upcoming(HOURLY, at("2025-06-01T08:30Z"), 10, window) == ats(
        "2025-06-01T10:00Z", "2025-06-01T11:00Z", "2025-06-01T12:00Z", "2025-06-01T13:00Z"
    )


def test_window_bounds_between_slots() -> None:
    window = Window(start=at("2025-06-01T10:20Z"), end=at("2025-06-01T13:40Z"))
    assert upcoming(HOURLY, at("2025-06-01T08:30Z"), 10, window) == ats(
        "2025-06-01T11:00Z", "2025-06-01T12:00Z", "2025-06-01T13:00Z"
    )


def test_window_slots_stay_strictly_after_the_given_instant() -> None:
    window = Window(start=at("2025-06-01T10:00Z"), end=at("2025-06-01T13:00Z"))
    assert upcoming(HOURLY, at("2025-06-01T10:00Z"), 10, window) == ats(
        "2025-06-01T11:00Z", "2025-06-01T12:00Z", "2025-06-01T13:00Z"
    )
    assert upcoming(HOURLY, at("2025-06-01T13:00Z"), 10, window) == []
    assert upcoming(HOURLY, at("2025-06-02T00:00Z"), 10, window) == []


def test_window_with_only_a_start_or_only_an_end() -> None:
    assert upcoming(HOURLY, at("2025-06-01T08:30Z"), 2, Window(start=at("2025-06-03T00:00Z"))) == ats(
        "2025-06-03T00:00Z", "2025-06-03T01:00Z"
    )
    assert upcoming(HOURLY, at("2025-06-01T08:30Z"), 10, Window(end=at("2025-06-01T10:59:59Z"))) == ats(
        "2025-06-01T09:00Z", "2025-06-01T10:00Z"
    )


def test_window_on_a_cron_job_in_local_time() -> None:
    # 09:00 New York daily, from 09:00 EST on 03-08 to 09:00 EDT on 03-10, both included.
    daily = CronTrigger(normalize("0 9 * * *"), NY)
    window = Window(start=datetime(2025, 3, 8, 9, 0, tzinfo=NY), end=datetime(2025, 3, 10, 9, 0, tzinfo=NY))
    assert upcoming(daily, at("2025-03-01T00:00Z"), 10, window) == ats(
        "2025-03-08T14:00Z", "2025-03-09T13:00Z", "2025-03-10T13:00Z"
    )


def test_at_fires_once() -> None:
    once = AtTrigger(at("2026-12-31T23:00:00Z"))
    assert upcoming(once, at("2026-01-01T00:00Z"), 5) == ats("2026-12-31T23:00Z")
    assert upcoming(once, at("2026-12-31T22:59:59.999999Z"), 5) == ats("2026-12-31T23:00Z")
    assert upcoming(once, at("2026-12-31T23:00:00Z"), 5) == []
    assert upcoming(once, at("2027-01-01T00:00Z"), 5) == []


def test_at_given_in_local_time_fires_at_that_instant_in_utc() -> None:
    once = AtTrigger(datetime(2026, 12, 31, 18, 0, tzinfo=NY))  # 23:00Z
    slot = once.next_after(at("2026-01-01T00:00Z"))
    assert slot == at("2026-12-31T23:00Z")
    assert slot is not None and slot.utcoffset() == timedelta(0)


def test_at_outside_its_window_never_fires() -> None:
    once = AtTrigger(at("2026-12-31T23:00:00Z"))
    assert upcoming(once, at("2026-01-01T00:00Z"), 5, Window(end=at("2026-12-31T22:00Z"))) == []
    assert upcoming(once, at("2026-01-01T00:00Z"), 5, Window(start=at("2027-01-01T00:00Z"))) == []
    assert upcoming(once, at("2026-01-01T00:00Z"), 5, Window(at("2026-12-31T23:00Z"), at("2026-12-31T23:00Z"))) == [
        at("2026-12-31T23:00Z")
    ]


# --------------------------------------------------------------------------------------
# Jitter
# --------------------------------------------------------------------------------------

QUARTER_HOURS = upcoming(EveryTrigger(timedelta(minutes=15)), at("2025-06-01T00:00Z"), 1000)


def test_jitter_is_deterministic() -> None:
    for slot in QUARTER_HOURS[:50]:
        assert jitter_offset("import-feeds", slot, timedelta(minutes=1)) == jitter_offset(
            "import-feeds", slot, timedelta(minutes=1)
        )


def test_jitter_is_the_same_in_another_process() -> None:
    """Every clock process must pick the same delay: nothing may depend on hash randomization."""
    slots = QUARTER_HOURS[:20]
    code = (
        "import json, sys; from datetime import datetime, timedelta; "
        "from dynoclock.schedule.triggers import jitter_offset; "
        "print(json.dumps([jitter_offset('import-feeds', datetime.fromisoformat(s), timedelta(minutes=1))"
        ".total_seconds() for s in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps([s.isoformat() for s in slots])],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == [
        jitter_offset("import-feeds", s, timedelta(minutes=1)).total_seconds() for s in slots
    ]


@pytest.mark.parametrize(
    "jitter",
    [
        timedelta(milliseconds=1),
        timedelta(milliseconds=7),
        timedelta(milliseconds=999),
        timedelta(seconds=30),
        timedelta(minutes=10),
        timedelta(hours=1),
    ],
    ids=str,
)
def test_jitter_lies_in_zero_to_jitter(jitter: timedelta) -> None:
    offsets = [jitter_offset("nightly", slot, jitter) for slot in QUARTER_HOURS]
    assert all(timedelta(0) <= o < jitter for o in offsets)
    if jitter >= timedelta(seconds=30):  # spread over the whole range, not bunched at one end
        assert min(offsets) < jitter * 0.05 and max(offsets) > jitter * 0.95
        assert jitter * 0.4 < sum(offsets, timedelta(0)) / len(offsets) < jitter * 0.6


def test_jitter_differs_across_slots_and_jobs() -> None:
    minute = timedelta(minutes=1)
    by_slot = [jitter_offset("import-feeds", slot, minute) for slot in QUARTER_HOURS[:200]]
    assert len(set(by_slot)) >= 195
    slot = QUARTER_HOURS[0]
    by_job = [jitter_offset(f"job-{i}", slot, minute) for i in range(100)]
    assert len(set(by_job)) >= 95


def test_no_jitter_means_no_delay() -> None:
    assert jitter_offset("import-feeds", QUARTER_HOURS[0], timedelta(0)) == timedelta(0)
