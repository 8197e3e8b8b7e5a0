"""catchup.plan: what a new leader does about slots with no row. Pure: fixed instants, no clock, no database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynoclock.config.loader import Job, load_schedule
from dynoclock.schedule import catchup
from dynoclock.schedule.catchup import Missed

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LoadJob = Callable[[str], Job]


def at(minute: int, second: int = 0) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


@pytest.fixture
def job(tmp_path: Path) -> LoadJob:
    """Load one job named ``j`` from YAML options written under ``jobs.j``."""

    def load(options: str) -> Job:
        path = tmp_path / "schedule.yaml"
        body = "".join(f"    {line}\n" for line in options.strip().splitlines())
        path.write_text(f"jobs:\n  j:\n{body}    command: [sh, -c, 'true']\n")
        return load_schedule(str(path), env={}).jobs["j"]

    return load


def test_a_job_with_no_row_yet_has_no_past(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m"), None, [], at(10, 30))
    assert (plan.run, plan.skipped, plan.missed) == ([], [], None)


def test_nothing_to_do_when_no_slot_passed(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m"), at(10), [], at(10, 59))
    assert (plan.run, plan.skipped, plan.missed) == ([], [], None)


def test_stopped_ten_minutes_runs_the_latest_slot_within_grace_and_records_the_rest(job: LoadJob) -> None:
    # every: 1m, misfire_grace: 3m, the last slot in the ledger 12:00, the new leader at 12:10:30.
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m"), at(0), [], at(10, 30))
    assert plan.run == [at(10)]
    assert plan.skipped == [at(8), at(9)]  # within the grace, coalesced into the 12:10 run
    assert plan.missed == Missed(7, at(1), at(7))  # 12:01 .. 12:07 are older than 12:07:30: one row for them


def test_catch_up_all_runs_every_slot_within_grace(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m\ncatch_up: all"), at(0), [], at(10, 30))
    assert plan.run == [at(8), at(9), at(10)]
    assert plan.skipped == []
    assert plan.missed == Missed(7, at(1), at(7))


def test_slots_stay_anchored_to_the_epoch_after_a_restart(job: LoadJob) -> None:
    # The clock restarted at an odd instant: slots are still on whole minutes, not "now + 1m".
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m"), at(0), [], at(10, 30) + timedelta(milliseconds=123))
    assert plan.missed is not None
    slots = [*plan.run, *plan.skipped, plan.missed.first, plan.missed.last]
    assert all(slot.second == 0 and slot.microsecond == 0 for slot in slots)
    assert plan.run == [at(10)]


def test_slots_stay_anchored_to_an_explicit_anchor(job: LoadJob) -> None:
    j = job('every: 1m\nmisfire_grace: 3m\nanchor: "2026-01-01T00:00:20Z"')
    plan = catchup.plan(j, at(0, 20), [], at(10, 30))
    assert plan.run == [at(10, 20)]
    assert plan.skipped == [at(8, 20), at(9, 20)]
    assert plan.missed == Missed(7, at(1, 20), at(7, 20))


def test_a_slot_exactly_at_the_grace_limit_still_runs(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m\ncatch_up: all"), at(0), [], at(10))
    assert plan.run == [at(7), at(8), at(9), at(10)]  # 12:07 is exactly 3m before 12:10: inside
    assert plan.missed == Missed(6, at(1), at(6))


def test_zero_grace_records_every_passed_slot_missed(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 0s"), at(0), [], at(3, 1))
    assert (plan.run, plan.skipped) == ([], [])
    assert plan.missed == Missed(3, at(1), at(3))


def test_cron_slots_are_caught_up_the_same_way(job: LoadJob) -> None:
    plan = catchup.plan(job('cron: "*/5 * * * *"\nmisfire_grace: 10m'), at(0), [], at(31))
    assert plan.run == [at(30)]
    assert plan.skipped == [at(25)]
    assert plan.missed == Missed(4, at(5), at(20))


def test_a_one_off_at_within_grace_runs(job: LoadJob) -> None:
    j = job('at: "2026-03-01T12:05:00Z"')
    assert catchup.plan(j, at(0), [], at(7)).run == [at(5)]
    late = catchup.plan(j, at(0), [], at(30))
    assert (late.run, late.missed) == ([], Missed(1, at(5), at(5)))


def test_slots_after_the_window_end_are_not_planned(job: LoadJob) -> None:
    j = job('every: 1m\nmisfire_grace: 3m\ncatch_up: all\nend: "2026-03-01T12:08:00Z"')
    plan = catchup.plan(j, at(0), [], at(10, 30))
    assert plan.run == [at(8)]
    assert plan.missed == Missed(7, at(1), at(7))


def test_the_missed_row_says_how_many_slots_from_when_to_when(job: LoadJob) -> None:
    missed = catchup.plan(job("every: 1m\nmisfire_grace: 3m"), at(0), [], at(10, 30)).missed
    assert missed is not None
    assert missed.error(timedelta(minutes=3)) == (
        "not run within misfire_grace=3m: 7 slots from 2026-03-01T12:01:00Z to 2026-03-01T12:07:00Z"
        " (this row stands for all)"
    )
    assert Missed(1, at(5), at(5)).error(timedelta(0)) == (
        "not run within misfire_grace=0s: 1 slot at 2026-03-01T12:05:00Z (this row stands for all)"
    )


# ---- gaps between rows ---------------------------------------------------------------------------


def test_a_gap_between_rows_within_the_window_runs_with_catch_up_all(job: LoadJob) -> None:
    # A clock stopped in the middle of a chain: 12:05 .. 12:07 have no row, 12:08 .. 12:10 do.
    taken = [at(m) for m in (1, 2, 3, 4, 8, 9, 10)]
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 15m\ncatch_up: all"), at(0), taken, at(10, 30))
    assert plan.run == [at(5), at(6), at(7)]
    assert (plan.skipped, plan.missed) == ([], None)


def test_a_gap_before_a_later_row_is_coalesced_into_it_with_catch_up_one(job: LoadJob) -> None:
    taken = [at(m) for m in (1, 2, 3, 4, 8, 9)]
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 15m"), at(0), taken, at(10, 30))
    assert plan.run == [at(10)]  # the newest slot with no row, after every row
    assert plan.skipped == [at(5), at(6), at(7)]
    no_tail = catchup.plan(job("every: 1m\nmisfire_grace: 15m"), at(0), [*taken, at(10)], at(10, 30))
    assert (no_tail.run, no_tail.skipped) == ([], [at(5), at(6), at(7)])  # 12:10 ran: it stands for them


def test_gaps_past_the_window_join_the_missed_row_and_gaps_within_it_run(job: LoadJob) -> None:
    taken = [at(m) for m in (2, 5, 9)]
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m\ncatch_up: all"), at(0), taken, at(10, 30))
    assert plan.missed == Missed(5, at(1), at(7))  # 12:01, 12:03, 12:04, 12:06, 12:07: older than 12:07:30
    assert plan.run == [at(8), at(10)]


def test_a_job_whose_first_row_is_recent_has_no_past_before_it(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 15m\ncatch_up: all"), None, [at(4), at(6)], at(8))
    assert plan.run == [at(5), at(7), at(8)]
    assert plan.missed is None


def test_rows_off_the_grid_hide_no_slot(job: LoadJob) -> None:
    # A slot of an older schedule (12:04:30) sits between two slots of this one.
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 15m\ncatch_up: all"), at(3), [at(4, 30)], at(6))
    assert plan.run == [at(4), at(5), at(6)]


# ---- long gaps, fast ---------------------------------------------------------------------------


def test_a_gap_of_three_days_of_every_1s_runs_within_the_window_and_counts_the_rest(job: LoadJob) -> None:
    now = T0 + timedelta(days=3, milliseconds=400)
    plan = catchup.plan(job("every: 1s\ncatch_up: all"), T0, [], now)
    window = [now.replace(microsecond=0) - timedelta(seconds=s) for s in range(299, -1, -1)]  # grace 5m
    assert plan.run == window
    assert plan.missed == Missed(3 * 86_400 - 300, T0 + timedelta(seconds=1), window[0] - timedelta(seconds=1))
    one = catchup.plan(job("every: 1s"), T0, [], now)
    assert (one.run, one.skipped, one.missed) == (window[-1:], window[:-1], plan.missed)


def test_a_long_gap_is_counted_not_walked(job: LoadJob) -> None:
    # Ten years of every: 1s would be 315 million steps one by one; counted, it is a subtraction.
    plan = catchup.plan(job("every: 1s\nmisfire_grace: 1s"), T0, [], T0 + timedelta(days=3650))
    assert plan.missed is not None and plan.missed.count == 3650 * 86_400 - 2
    assert plan.run == [T0 + timedelta(days=3650)]


def test_a_window_of_more_than_max_slots_keeps_the_newest_and_counts_the_rest(job: LoadJob) -> None:
    now = T0 + timedelta(days=3)
    plan = catchup.plan(job("every: 1s\nmisfire_grace: 3d\ncatch_up: all"), T0, [], now)
    assert len(plan.run) == catchup.MAX_SLOTS
    assert plan.run[-1] == now
    assert plan.missed == Missed(
        3 * 86_400 - catchup.MAX_SLOTS, T0 + timedelta(seconds=1), plan.run[0] - timedelta(seconds=1)
    )


def test_a_cron_gap_of_three_days_is_counted_exactly(job: LoadJob) -> None:
    plan = catchup.plan(job('cron: "* * * * *"'), T0, [], T0 + timedelta(days=3, seconds=30))
    assert plan.missed == Missed(3 * 1440 - 5, T0 + timedelta(minutes=1), T0 + timedelta(days=3, minutes=-5))
    assert plan.run == [T0 + timedelta(days=3)]
    assert len(plan.skipped) == 4


def test_a_cron_gap_past_max_walk_says_at_least(job: LoadJob, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catchup, "MAX_WALK", 1000)
    plan = catchup.plan(job('cron: "* * * * *"'), T0, [], T0 + timedelta(days=3, seconds=30))
    assert plan.missed is not None and plan.missed.at_least
    assert plan.missed.first == T0 + timedelta(minutes=1)
    assert plan.missed.last == T0 + timedelta(days=3, minutes=-5)  # the walk went on near the window
    assert 1000 < plan.missed.count < 3 * 1440 - 5
    assert plan.missed.error(timedelta(minutes=5)).startswith("not run within misfire_grace=5m: at least ")


def test_every_slots_respect_the_start_and_end_bounds_when_counted(job: LoadJob) -> None:
    j = job('every: 1m\nmisfire_grace: 3m\nstart: "2026-03-01T12:03:00Z"\nend: "2026-03-01T12:08:30Z"')
    plan = catchup.plan(j, at(0), [], at(10, 30))
    assert plan.missed == Missed(5, at(3), at(7))
    assert plan.run == [at(8)]
