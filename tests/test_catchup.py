"""catchup.plan: what a new leader does about slots that passed with no leader. Pure: fixed instants, no clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynoclock.config.loader import Job, load_schedule
from dynoclock.schedule import catchup

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
    plan = catchup.plan(job("every: 1m"), None, at(10, 30))
    assert (plan.run, plan.skipped, plan.missed, plan.uncounted, plan.truncated) == ([], [], [], 0, False)


def test_nothing_to_do_when_no_slot_passed(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m"), at(10), at(10, 59))
    assert (plan.run, plan.skipped, plan.missed) == ([], [], [])


def test_stopped_ten_minutes_runs_the_latest_slot_within_grace_and_records_the_rest(job: LoadJob) -> None:
    # every: 1m, misfire_grace: 3m, the last slot in the ledger 12:00, the new leader at 12:10:30.
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m"), at(0), at(10, 30))
    assert plan.run == [at(10)]
    assert plan.skipped == [at(8), at(9)]  # within the grace, coalesced into the 12:10 run
    assert plan.missed == [at(m) for m in range(1, 8)]  # 12:01 .. 12:07 are older than 12:07:30
    assert (plan.uncounted, plan.truncated) == (0, False)


def test_catch_up_all_runs_every_slot_within_grace(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m\ncatch_up: all"), at(0), at(10, 30))
    assert plan.run == [at(8), at(9), at(10)]
    assert plan.skipped == []
    assert plan.missed == [at(m) for m in range(1, 8)]


def test_slots_stay_anchored_to_the_epoch_after_a_restart(job: LoadJob) -> None:
    # The clock restarted at an odd instant: slots are still on whole minutes, not "now + 1m".
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m"), at(0), at(10, 30) + timedelta(milliseconds=123))
    assert all(slot.second == 0 and slot.microsecond == 0 for slot in plan.run + plan.skipped + plan.missed)
    assert plan.run == [at(10)]


def test_slots_stay_anchored_to_an_explicit_anchor(job: LoadJob) -> None:
    j = job('every: 1m\nmisfire_grace: 3m\nanchor: "2026-01-01T00:00:20Z"')
    plan = catchup.plan(j, at(0, 20), at(10, 30))
    assert plan.run == [at(10, 20)]
    assert plan.skipped == [at(8, 20), at(9, 20)]
    assert plan.missed == [at(m, 20) for m in range(1, 8)]


def test_a_slot_exactly_at_the_grace_limit_still_runs(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 3m\ncatch_up: all"), at(0), at(10))
    assert plan.run == [at(7), at(8), at(9), at(10)]  # 12:07 is exactly 3m before 12:10: inside
    assert plan.missed == [at(m) for m in range(1, 7)]


def test_zero_grace_records_every_passed_slot_missed(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1m\nmisfire_grace: 0s"), at(0), at(3, 1))
    assert (plan.run, plan.skipped, plan.missed) == ([], [], [at(1), at(2), at(3)])


def test_cron_slots_are_caught_up_the_same_way(job: LoadJob) -> None:
    plan = catchup.plan(job('cron: "*/5 * * * *"\nmisfire_grace: 10m'), at(0), at(31))
    assert plan.run == [at(30)]
    assert plan.skipped == [at(25)]
    assert plan.missed == [at(m) for m in (5, 10, 15, 20)]


def test_a_one_off_at_within_grace_runs(job: LoadJob) -> None:
    j = job('at: "2026-03-01T12:05:00Z"')
    assert catchup.plan(j, at(0), at(7)).run == [at(5)]
    late = catchup.plan(j, at(0), at(30))
    assert (late.run, late.missed) == ([], [at(5)])


def test_slots_after_the_window_end_are_not_planned(job: LoadJob) -> None:
    j = job('every: 1m\nmisfire_grace: 3m\ncatch_up: all\nend: "2026-03-01T12:08:00Z"')
    plan = catchup.plan(j, at(0), at(10, 30))
    assert plan.run == [at(8)]
    assert plan.missed == [at(m) for m in range(1, 8)]


def test_missed_rows_are_capped_and_the_rest_only_counted(job: LoadJob) -> None:
    # every: 1s down for 3000 s with a 10 s grace: 11 slots within grace, 2989 older.
    plan = catchup.plan(job("every: 1s\nmisfire_grace: 10s"), T0, T0 + timedelta(seconds=3000))
    assert plan.run == [T0 + timedelta(seconds=3000)]
    assert len(plan.skipped) == 10
    assert len(plan.missed) == catchup.MAX_RECORDED
    # The newest missed slots are the ones recorded; the oldest are only counted.
    assert plan.missed[0] == T0 + timedelta(seconds=2989 - catchup.MAX_RECORDED + 1)
    assert plan.missed[-1] == T0 + timedelta(seconds=2989)
    assert plan.uncounted == 2989 - catchup.MAX_RECORDED
    assert plan.truncated is False


def test_the_walk_is_bounded(job: LoadJob) -> None:
    plan = catchup.plan(job("every: 1s"), T0, T0 + timedelta(days=3))
    assert plan.truncated is True
    assert len(plan.missed) + plan.uncounted + len(plan.skipped) + len(plan.run) == catchup.MAX_SLOTS
