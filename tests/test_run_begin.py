"""A claimed run starts only once the ledger says it started (``Ledger.begin``, through ``Claims.begin``).

A row still ``claimed`` after its clock went silent is taken over by the next leader as never started, and run.
That is safe only if no run ever starts while its row says ``claimed``: a clock whose packets were dropped right
after it claimed once ran the slot while its "started" write waited in a queue, and the next leader ran it again
(tests/test_half_open.py found it with real dropped packets).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dynoclock.config.loader import load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import Ledger
from tests.support.processes import write_schedule

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def statuses(store: Ledger) -> dict[str, tuple[str, str]]:
    return {run.run_id: (run.status, run.clock) for run in store.history(limit=100)}


def test_begin_marks_this_clocks_claim_started_once_even_if_its_reply_was_lost(store: Ledger) -> None:
    assert store.claim("r1", "tick", SLOT, "me")
    at = SLOT + timedelta(seconds=1)
    assert store.begin("r1", "me", 1, at) is True
    assert statuses(store) == {"r1": ("running", "me")}
    assert store.begin("r1", "me", 1, at) is True  # the same call again: its first reply was lost after the commit
    assert store.begin("r1", "me", 1, at + timedelta(seconds=1)) is False  # another start of a started run
    assert store.begin("r1", "other", 1, at) is False
    run = store.history()[0]
    assert (run.started_at, run.attempt) == (at, 1)


def test_begin_refuses_a_claim_another_clock_took_over_or_closed(store: Ledger) -> None:
    assert store.claim("taken", "tick", SLOT, "me")
    assert store.claim("closed", "tick", SLOT + timedelta(hours=1), "me")
    old = {run.run_id: run for run in store.history()}
    assert store.reclaim(old["taken"], "next-leader", reason="schedule")
    assert store.interrupt(old["closed"], "clock me stopped before the run started", status="missed")
    assert store.begin("taken", "me", 1, SLOT) is False
    assert store.begin("closed", "me", 1, SLOT) is False
    assert store.unclaim("taken", "me") is False  # nor may it give back a claim that is no longer its own
    assert statuses(store) == {"taken": ("claimed", "next-leader"), "closed": ("missed", "me")}


def test_close_claim_records_only_this_clocks_own_claim_missed(store: Ledger) -> None:
    assert store.claim("mine", "tick", SLOT, "me")
    assert store.claim("theirs", "tick", SLOT + timedelta(hours=1), "other")
    assert store.close_claim("mine", "me", "database unreachable") is True
    assert store.close_claim("mine", "me", "database unreachable") is False
    assert store.close_claim("theirs", "me", "database unreachable") is False
    assert statuses(store) == {"mine": ("missed", "me"), "theirs": ("claimed", "other")}


def runner_on(tmp_path: Path, store: Ledger, job: str) -> tuple[Runner, io.StringIO]:
    schedule = load_schedule(str(write_schedule(tmp_path, f"jobs:\n  probe:\n    every: 1h\n    {job}\n")))
    stream = io.StringIO()
    return Runner(schedule, EventLog(stream, fmt="json"), "me", Ledger(store.url)), stream


def test_a_run_starts_only_once_its_row_says_running(tmp_path: Path, store: Ledger) -> None:
    runner, _ = runner_on(
        tmp_path, store, f"python: tests.jobs_for_tests:own_row_status\n    kwargs: {{url: '{store.url}'}}"
    )
    slot = datetime.now(UTC).replace(microsecond=0)
    outcome = runner.execute(runner.schedule.jobs["probe"], slot)
    assert (outcome.status, outcome.detail) == ("ok", "running")  # the job saw its own row started, not claimed


def test_a_claimed_run_that_another_clock_took_over_before_it_started_is_never_run(
    tmp_path: Path, store: Ledger
) -> None:
    # A clock claimed a slot, then lost the database until the next leader had taken the run over: it must not
    # run it as well when its turn comes.
    runner, stream = runner_on(tmp_path, store, f"command: [sh, -c, 'echo ran >> ran.txt']\n    cwd: '{tmp_path}'")
    slot = datetime.now(UTC).replace(microsecond=0)
    assert store.claim("r1", "probe", slot, "me")
    assert store.reclaim(store.history()[0], "next-leader", reason="schedule")
    outcome = runner.execute(runner.schedule.jobs["probe"], slot, claimed_as="r1")
    assert outcome.status == "duplicate"
    assert not (tmp_path / "ran.txt").exists()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["run.duplicate"]
    assert statuses(store) == {"r1": ("claimed", "next-leader")}
