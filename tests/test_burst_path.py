"""What keeps a burst's runs from waiting on each other: the start writes' batches, the hand-over at the answer,
the writers that give way while runs start (dynoclock/quiet.py), and no garbage cycle per attempt."""

from __future__ import annotations

import gc
import io
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynoclock import quiet
from dynoclock.actions.base import RunContext
from dynoclock.config.loader import load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.run.runner import Runner
from dynoclock.run.watchdog import Watch
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim
from dynoclock.state.writer import BEGIN_CHUNK, RunWriter
from dynoclock.timesource import SYSTEM
from tests.support.processes import write_schedule

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WAIT = 30.0


class GatedBegins(Ledger):
    """A real Ledger whose start writes wait at a gate the test opens, and which records each one's size."""

    def __init__(self, url: str):
        super().__init__(url)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def begin(self, starts: list[tuple[str, int, datetime]], clock: str) -> set[str]:
        self.sizes.append(len(starts))
        self.entered.set()
        assert self.gate.wait(60)
        return super().begin(starts, clock)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def claimed(ledger: Ledger, count: int, clock: str = "me") -> list[str]:
    ids = [f"run-{i:04d}" for i in range(count)]
    assert ledger.claim_many([Claim(run_id, f"job-{i}", SLOT, clock) for i, run_id in enumerate(ids)])
    return ids


# ---- start writes -------------------------------------------------------------------------------


def test_the_first_start_write_goes_alone_and_the_next_full_batches_go_together(store: Ledger) -> None:
    # The first runs of a burst wait for the first transaction only; the starts asked for meanwhile are cut into
    # batches of BEGIN_CHUNK, and full ones are written together (the last, still filling, in its own).
    ledger = GatedBegins(store.url)
    writer = RunWriter(ledger, EventLog(io.StringIO()), SYSTEM, "me")
    ids = claimed(store, 2 * BEGIN_CHUNK + 51)
    answers = [writer.request_begin(ids[0], 1, SLOT)]
    assert ledger.entered.wait(WAIT)  # the first transaction holds that one start
    answers += [writer.request_begin(run_id, 1, SLOT) for run_id in ids[1:]]
    ledger.gate.set()
    assert [answer.result() for answer in answers] == [True] * len(ids)
    assert ledger.sizes == [1, 2 * BEGIN_CHUNK, 50]
    assert {run.status for run in store.history(limit=1000)} == {"running"}


def test_a_start_write_that_fails_raises_for_every_run_of_its_batch(store: Ledger) -> None:
    class Away(Ledger):
        def begin(self, starts: list[tuple[str, int, datetime]], clock: str) -> set[str]:
            raise ConnectionError("the database is away")

    writer = RunWriter(Away(store.url), EventLog(io.StringIO()), SYSTEM, "me")
    answers = [writer.request_begin(run_id, 1, SLOT) for run_id in ("a", "b", "c")]
    for answer in answers:
        with pytest.raises(ConnectionError):
            answer.result()


def test_then_calls_at_once_once_answered_and_from_the_writer_when_the_answer_comes(store: Ledger) -> None:
    ledger = GatedBegins(store.url)
    writer = RunWriter(ledger, EventLog(io.StringIO()), SYSTEM, "me")
    first, mine = claimed(store, 2)
    waiting = writer.request_begin(first, 1, SLOT)
    calls: list[str] = []
    waiting.then(lambda: calls.append(threading.current_thread().name))
    assert ledger.entered.wait(WAIT)
    assert calls == []  # not before the answer
    ledger.gate.set()
    wait_until(lambda: calls == ["run-begins"], "the call from the start writes' thread")
    answered = writer.request_begin(mine, 1, SLOT)
    assert answered.result() is True
    answered.then(lambda: calls.append(threading.current_thread().name))
    assert calls == ["run-begins", threading.current_thread().name]  # answered: called at once, here


# ---- the hand-over ------------------------------------------------------------------------------


def test_a_claimed_run_goes_to_a_worker_only_once_its_start_write_is_answered(tmp_path: Path, store: Ledger) -> None:
    # Its start time has come, but its start write is held: no worker is handed the run (in a burst, 200 woken
    # workers waiting on the answers held the start writes' thread off the interpreter lock). Once answered, it runs.
    ledger = GatedBegins(store.url)
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  probe:\n    every: 1h\n    command: ['true']\n")))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="json"), "me", ledger)
    assert runner.claims is not None and runner.writer is not None
    handed: list[Callable[[], None]] = []
    submit = runner.pool.submit

    def recording(task: Callable[[], None]) -> None:
        handed.append(task)
        submit(task)

    runner.pool.submit = recording  # type: ignore[method-assign]
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    claim = runner.claims.new("probe", slot)
    assert runner.claims.batch([claim]) == {claim.run_id}
    runner.submit("probe", slot, claimed_as=claim.run_id)
    assert ledger.entered.wait(WAIT)  # asked for BEGIN_AHEAD before the slot
    wait_until(lambda: datetime.now(UTC) > slot + timedelta(milliseconds=300), "the slot to pass")
    assert handed == []
    ledger.gate.set()
    wait_until(lambda: len(handed) == 1, "the hand-over")
    runner.inflight.wait_idle(time.monotonic() + WAIT)
    runner.writer.flush(WAIT)
    assert [(run.run_id, run.status) for run in store.history()] == [(claim.run_id, "ok")]


# ---- writers that give way ----------------------------------------------------------------------


def test_log_lines_wait_while_runs_are_starting_and_are_written_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quiet, "HOLD", 1.0)
    monkeypatch.setattr(quiet, "MAX_HOLD", 30.0)
    stream = io.StringIO()
    events = EventLog(stream)
    events.write_behind()
    events.emit("warm.up")
    events.flush(WAIT)
    quiet.starting()
    events.emit("run.ok", job="a")
    time.sleep(0.3)  # well inside HOLD after the start
    assert "run.ok" not in stream.getvalue()
    wait_until(lambda: "run.ok" in stream.getvalue(), "the line once runs stopped starting")


def test_a_log_line_waits_no_longer_than_max_hold_however_long_runs_keep_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(quiet, "HOLD", 1.0)
    monkeypatch.setattr(quiet, "MAX_HOLD", 0.5)
    stream = io.StringIO()
    events = EventLog(stream)
    events.write_behind()
    quiet.starting()
    events.emit("run.ok", job="a")
    deadline = time.monotonic() + WAIT
    while "run.ok" not in stream.getvalue():  # runs keep starting: only MAX_HOLD lets the line out
        assert time.monotonic() < deadline, "the line never came"
        quiet.starting()
        time.sleep(0.02)


def test_history_waits_while_runs_are_starting_and_is_written_after(
    store: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quiet, "HOLD", 1.5)
    monkeypatch.setattr(quiet, "MAX_HOLD", 30.0)
    writer = RunWriter(store, EventLog(io.StringIO()), SYSTEM, "me")
    (run_id,) = claimed(store, 1)
    quiet.starting()
    writer.started(run_id, 1, SLOT + timedelta(seconds=1))
    time.sleep(0.4)  # past the 50 ms batch window, inside HOLD
    assert [run.status for run in store.history()] == ["claimed"]
    assert writer.flush(WAIT)
    assert [run.status for run in store.history()] == ["running"]


def test_a_rush_of_starts_lengthens_the_switch_interval_until_the_starts_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quiet, "HOLD", 0.2)
    wait_until(lambda: not quiet._rush.locked(), "no rush left by an earlier test")
    normal = sys.getswitchinterval()
    assert normal == quiet.NORMAL_SWITCH != quiet.RUSH_SWITCH
    time.sleep(0.25)  # a pause: the starts below are a series of their own
    for _ in range(quiet.RUSH_STARTS - 1):
        quiet.starting()
    assert sys.getswitchinterval() == normal  # one start short of a rush
    quiet.starting()
    assert sys.getswitchinterval() == pytest.approx(quiet.RUSH_SWITCH)
    for _ in range(6):  # the rush goes on: starts 50 ms apart, inside HOLD, for longer than HOLD
        time.sleep(0.05)
        quiet.starting()
        assert sys.getswitchinterval() == pytest.approx(quiet.RUSH_SWITCH)
    wait_until(lambda: sys.getswitchinterval() == normal, "the normal interval once the starts paused")
    wait_until(lambda: not quiet._rush.locked(), "the rush over")


def test_starts_with_pauses_between_them_make_no_rush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quiet, "HOLD", 0.05)
    monkeypatch.setattr(quiet, "RUSH_STARTS", 3)
    wait_until(lambda: not quiet._rush.locked(), "no rush left by an earlier test")
    normal = sys.getswitchinterval()
    for _ in range(8):  # more starts than a rush, each after a pause of HOLD
        time.sleep(0.07)
        quiet.starting()
        assert sys.getswitchinterval() == normal
    for _ in range(3):  # then three in a row: a rush
        quiet.starting()
    assert sys.getswitchinterval() == pytest.approx(quiet.RUSH_SWITCH)
    wait_until(lambda: sys.getswitchinterval() == normal, "the normal interval once the starts paused")


# ---- per attempt --------------------------------------------------------------------------------


def test_an_attempt_leaves_no_garbage_cycle(tmp_path: Path) -> None:
    # The watch held the context and the context's cancel step held the watch: every attempt left ~30 objects
    # for the cyclic GC, whose collections were 15% of a burst's CPU.
    text = "jobs:\n  probe:\n    every: 1h\n    python: tests.jobs_for_tests:describe_run\n"
    schedule = load_schedule(str(write_schedule(tmp_path, text)))
    runner = Runner(schedule, EventLog(io.StringIO()), "me")
    job = schedule.jobs["probe"]
    runner.execute(job, SLOT)  # imports, caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(20):
            assert runner.execute(job, SLOT + timedelta(hours=i)).status == "ok"
        gc.collect()
        cycles = [type(o).__name__ for o in gc.garbage if isinstance(o, RunContext | Watch)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cycles == []


def test_cancelled_is_set_whether_it_is_first_asked_for_before_or_after_the_cancel() -> None:
    before = RunContext("a", SLOT, "r1", 1, timedelta(seconds=30))
    event = before.cancelled
    assert not event.is_set()
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(before.cancelled.wait(WAIT)))
    waiter.start()
    before.cancel("timeout")
    waiter.join(WAIT)
    assert (event.is_set(), before.cancelled is event, waited, before.cancel_reason) == (True, True, [True], "timeout")
    after = RunContext("a", SLOT, "r2", 1, timedelta(seconds=30))
    after.cancel("shutdown")
    after.cancel("replaced")  # a second cancel changes nothing
    assert (after.cancelled.is_set(), after.cancel_reason) == (True, "shutdown")
