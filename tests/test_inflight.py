"""InFlight (run/inflight.py): the runs a Runner has in hand, driven through its public methods."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from dynoclock.actions.base import RunContext
from dynoclock.run.inflight import InFlight
from dynoclock.run.outcome import Outcome, RunFields
from tests.support.clock import FakeClock

SLOT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def fields(run_id: str) -> RunFields:
    return {"job": "tick", "run_id": run_id, "scheduled_for": SLOT}


def ctx(job: str, run_id: str) -> RunContext:
    return RunContext(job, SLOT, run_id, 1, timedelta(seconds=5))


def test_a_claimed_run_released_while_it_waits_does_not_start_and_stops_counting():
    inflight = InFlight(FakeClock())
    for run_id in ("a", "b"):
        inflight.pending()
        inflight.wait_for_start(fields(run_id))
    assert inflight.start("a") is True  # its start came first: it runs
    released = inflight.release_waiting()
    assert [f["run_id"] for f in released] == ["b"]
    assert inflight.start("b") is False  # its timer entry fires after the release: it must not run
    inflight.done()  # "a" ran
    inflight.done()  # "b"'s entry ended at once
    inflight.wait_idle(until=0.0)  # returns: nothing pending


def test_wait_idle_does_not_wait_for_runs_given_back_at_shutdown():
    clock = FakeClock()
    inflight = InFlight(clock)
    inflight.pending()
    inflight.wait_for_start(fields("late"))
    assert len(inflight.release_waiting()) == 1
    done = threading.Event()

    def wait() -> None:
        inflight.wait_idle(clock.monotonic() + 3600)
        done.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(5)
    assert done.is_set(), "a run given back kept the shutdown waiting"


def test_running_attempts_per_job_and_waiting_for_a_job_to_end():
    inflight = InFlight(FakeClock())
    first, other = ctx("tick", "r1"), ctx("tock", "r2")
    inflight.add(first)
    inflight.add(other)
    assert inflight.running("tick") == [first]
    assert {c.run_id for c in inflight.running()} == {"r1", "r2"}
    ended = threading.Event()

    def wait() -> None:
        inflight.wait_for_job("tick", threading.Event())
        ended.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not ended.wait(0.3)  # "tick" still runs
    inflight.forget(first)
    waiter.join(5)
    assert ended.is_set()
    assert inflight.running("tick") == []
    assert inflight.running() == [other]


def test_run_job_gets_the_watchdogs_outcome_when_its_attempt_was_written_off():
    inflight = InFlight(FakeClock())
    done = inflight.expect("r1")
    recorded = Outcome("timeout", error="timed out")
    inflight.written_off("r1", recorded)
    assert inflight.settled("r1") is recorded
    inflight.ended("r1", done, Outcome("abandoned"))  # the run's own result comes later: the watchdog's stays
    assert done.result(0) is recorded
    assert inflight.settled("r1") is None  # read once


def test_run_job_gets_its_own_outcome_when_nothing_was_written_off():
    inflight = InFlight(FakeClock())
    done = inflight.expect("r1")
    ok = Outcome("ok")
    inflight.ended("r1", done, ok)
    assert done.result(0) is ok
    assert inflight.settled("r1") is None
