"""Runtime jobs with real clock processes, on SQLite and Postgres: the app's changes reach a running leader, every
slot runs once (two clocks, a leader killed while jobs are being added), an interval changed or a job removed
while it runs, and schedule.yaml reloaded on SIGHUP."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import dynoclock
from dynoclock import signals
from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import UNFINISHED, from_db, jobs
from tests.support.processes import ClockProcess, Clocks, slot_floor, tick_slots, wait_until
from tests.support.state import all_runs

BEAT = """jobs:
  beat:
    every: 1s
    command: [sh, -c, 'echo $CLOCK_SCHEDULED_FOR >> beats.txt']
"""
# What the app's jobs run: the slot, into a file of the job's own (sh expands the variable, not dynoclock).
NOT_RUN = ("skipped", "missed")
TICK = ["sh", "-c", "echo $CLOCK_SCHEDULED_FOR >> ticks.txt"]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def beats_after(tmp_path: Path, count: int) -> None:
    """Wait until the schedule's own job has run ``count`` more times: time passes, as the clock sees it."""
    start = len(lines(tmp_path / "beats.txt"))
    wait_until(lambda: len(lines(tmp_path / "beats.txt")) >= start + count, f"{count} more beats")


def leader_of(*clocks: ClockProcess) -> ClockProcess:
    found: ClockProcess = wait_until(lambda: next((c for c in clocks if c.events("clock.leader")), None), "a leader")
    return found


def test_reminders_from_the_app_run_once_with_two_clocks(
    clocks: Clocks, write_schedule: Callable[[str], Path], state_db: str, tmp_path: Path
) -> None:
    first, second = clocks(write_schedule(BEAT)), clocks(write_schedule(BEAT))
    first.wait_for("clock.ready"), second.wait_for("clock.ready")
    # The app, in five lines:
    clock = dynoclock.connect(state_db)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    for user in range(20):
        remind = ["sh", "-c", f"echo {user} >> reminders.txt"]
        clock.at(soon + timedelta(milliseconds=100 * user), key=f"remind-{user}", command=remind)
    wait_until(lambda: len(lines(tmp_path / "reminders.txt")) >= 20, "20 reminders")
    ledger = Ledger(state_db)
    wait_until(lambda: len([r for r in all_runs(ledger) if r.job.startswith("remind-") and r.status == "ok"]) == 20,
               "20 rows ok")  # fmt: skip
    beats_after(tmp_path, 2)
    assert Counter(lines(tmp_path / "reminders.txt")) == Counter(str(user) for user in range(20))
    reminders = [run for run in all_runs(ledger) if run.job.startswith("remind-")]
    assert sorted(run.job for run in reminders) == sorted(f"remind-{user}" for user in range(20))
    # Finished one-offs leave the job list; their history stays.
    wait_until(lambda: [job["id"] for job in clock.jobs() if job["origin"] == "api"] == [], "the list emptied", 40)
    assert len(ledger.history("remind-3")) == 1


def test_a_running_leader_applies_an_add_and_a_pause_at_once(
    clocks: Clocks, write_schedule: Callable[[str], Path], state_db: str, tmp_path: Path
) -> None:
    leader = clocks(write_schedule(BEAT))
    leader.wait_for("clock.ready")
    beats_after(tmp_path, 1)
    clock = dynoclock.connect(state_db)
    clock.add("tick", every="1s", command=TICK)
    leader.wait_for("api_jobs.applied", job="tick", change="added")
    wait_until(lambda: len(tick_slots(tmp_path)) >= 2, "two ticks")
    clock.pause("tick")
    paused = leader.wait_for("run.skipped", job="tick")
    assert paused["error"] == "paused"
    clock.resume("tick")
    after = datetime.now(UTC)
    wait_until(lambda: any(slot > after for slot in tick_slots(tmp_path)), "a tick after resume")
    slots = tick_slots(tmp_path)
    assert len(slots) == len(set(slots))


def test_every_2s_changed_to_1s_runs_no_slot_twice_and_loses_none(
    clocks: Clocks, write_schedule: Callable[[str], Path], state_db: str, tmp_path: Path
) -> None:
    leader = clocks(write_schedule(BEAT))
    leader.wait_for("clock.ready")
    clock = dynoclock.connect(state_db)
    clock.add("tick", every="2s", command=TICK)
    wait_until(lambda: len(tick_slots(tmp_path)) >= 3, "three ticks every 2s")
    clock.update("tick", every="1s")
    with clock.ledger.engine.connect() as conn:
        switch = from_db(conn.execute(sa.select(jobs.c.updated_at).where(jobs.c.id == "tick")).scalar_one())
    wait_until(lambda: len([s for s in tick_slots(tmp_path) if s > switch]) >= 4, "four ticks every 1s")
    slots = tick_slots(tmp_path)
    assert len(slots) == len(set(slots)), "a slot ran twice"
    before = sorted(s for s in slots if s <= switch)
    after = sorted(s for s in slots if s > switch)
    step2, step1 = timedelta(seconds=2), timedelta(seconds=1)
    assert before == [before[0] + n * step2 for n in range(len(before))], "a 2s slot was lost"
    assert slot_floor(switch, step2) == before[-1], "the last 2s slot before the change was lost"
    first = slot_floor(switch, step1) + step1
    assert after[: len(after)] == [first + n * step1 for n in range(len(after))], "a 1s slot was lost"
    ledger = Ledger(state_db)
    wait_until(lambda: set(slots) <= {run.scheduled_for for run in all_runs(ledger, "tick") if run.status == "ok"},
               "every tick's row ok")  # fmt: skip


def test_a_removed_job_starts_no_run_claimed_after_its_removal(
    clocks: Clocks, write_schedule: Callable[[str], Path], state_db: str, tmp_path: Path
) -> None:
    leader = clocks(write_schedule(BEAT))
    leader.wait_for("clock.ready")
    clock = dynoclock.connect(state_db)
    clock.add("tick", every="1s", command=TICK)
    wait_until(lambda: len(tick_slots(tmp_path)) >= 2, "two ticks")
    clock.remove("tick")
    removed = datetime.now(UTC)
    leader.wait_for("api_jobs.removed", job="tick")
    beats_after(tmp_path, 3)
    runs = all_runs(Ledger(state_db), "tick")
    assert runs and all(run.claimed_at <= removed for run in runs)
    assert len(tick_slots(tmp_path)) == len(runs) == len({run.scheduled_for for run in runs})
    assert [job["id"] for job in clock.jobs() if job["origin"] == "api"] == []


@pytest.mark.slow
def test_leader_killed_while_the_app_adds_one_offs_and_changes_jobs_each_runs_once(
    clocks: Clocks, write_schedule: Callable[[str], Path], state_db: str, tmp_path: Path
) -> None:
    schedule = write_schedule(BEAT)
    first, second = clocks(schedule), clocks(schedule)
    first.wait_for("clock.ready"), second.wait_for("clock.ready")
    leader = leader_of(first, second)
    clock = dynoclock.connect(state_db)
    added: list[str] = []
    removed: dict[str, datetime] = {}

    def app() -> None:  # a web process busy with jobs while the clocks run
        for n in range(60):
            when = datetime.now(UTC) + timedelta(milliseconds=500 + 20 * n)
            added.append(clock.at(when, key=f"once-{n}", command=["sh", "-c", f"echo once-{n} >> once.txt"]))
            if n % 10 == 0:
                clock.add(f"rec-{n}", every="1s", command=["sh", "-c", f"echo $CLOCK_SCHEDULED_FOR >> rec-{n}.txt"])
            if n % 10 == 5:
                clock.remove(f"rec-{n - 5}")
                removed[f"rec-{n - 5}"] = datetime.now(UTC)
            threading.Event().wait(0.05)

    worker = threading.Thread(target=app)
    worker.start()
    wait_until(lambda: len(added) >= 20, "twenty one-offs added")
    leader.kill()
    worker.join()
    survivor = second if leader is first else first
    survivor_id = survivor.wait_for("clock.leader")["clock"]
    ledger = Ledger(state_db)

    def settled() -> bool:  # every one-off has its row, run (ok) or closed with its reason
        final = {run.job for run in all_runs(ledger) if run.job.startswith("once-") and run.status not in UNFINISHED}
        return final == set(added)

    wait_until(settled, "every one-off ran or was closed", timeout=90, details=lambda: survivor.text()[-3000:])
    runs = [run for run in all_runs(ledger) if run.job.startswith("once-")]
    assert sorted(run.job for run in runs) == sorted(added)  # one row each
    ran = Counter(lines(tmp_path / "once.txt"))
    assert max(ran.values()) == 1  # none twice
    for run in runs:
        # A run the killed leader had started is closed as interrupted (on_interrupted: skip); any other ran.
        started = run.started_at is not None and run.clock != survivor_id
        assert run.status == "ok" or (run.status == "interrupted" and started), run
        assert run.status != "ok" or ran[run.job] == 1, run
    for job_id, at in removed.items():
        # A takeover's catch-up may still record a slot of it skipped or missed; none is claimed to run.
        late = [run for run in all_runs(ledger, job_id) if run.claimed_at > at and run.status not in NOT_RUN]
        assert not late, (job_id, at, late)
        slots = [line for line in lines(tmp_path / f"{job_id}.txt")]
        assert len(slots) == len(set(slots))


def test_sighup_reloads_a_valid_schedule_and_keeps_the_running_one_on_problems(
    start_clock: Clocks, write_schedule: Callable[[str], Path], tmp_path: Path
) -> None:
    schedule = write_schedule(BEAT + "  gone:\n    every: 1h\n    command: 'true'\n")
    clock = start_clock(schedule)
    clock.wait_for("clock.ready")
    write_schedule(BEAT + "  tick:\n    every: 1s\n    command: [sh, -c, 'echo $CLOCK_SCHEDULED_FOR >> ticks.txt']\n")
    clock.signal(signal.SIGHUP)
    reloaded = clock.wait_for("clock.reloaded")
    assert (reloaded["added"], reloaded["changed"], reloaded["removed"]) == ("tick", "-", "gone")
    wait_until(lambda: len(tick_slots(tmp_path)) >= 2, "the added job runs")
    write_schedule(BEAT + "  tick:\n    every: 1s\n    retris: 2\n    cron: '0 9 32 * *'\n    command: 'true'\n")
    clock.signal(signal.SIGHUP)
    clock.wait_for("clock.reload_failed", count=2)
    problems = sorted(event["problem"] for event in clock.events("clock.reload_failed"))
    assert any("jobs.tick.retris: unknown key 'retris'" in p for p in problems), problems
    assert any("jobs.tick: expected exactly one trigger" in p for p in problems), problems
    assert all(p.startswith(f"{schedule}:") for p in problems)
    ticks = len(tick_slots(tmp_path))
    wait_until(lambda: len(tick_slots(tmp_path)) >= ticks + 2, "the running schedule goes on")
    assert clock.alive() and len(clock.events("clock.reloaded")) == 1


def test_sighup_is_held_until_the_clock_can_reload() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        signals.hold()
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: any(signum == signal.SIGHUP for signum, _ in signals.held()), "SIGHUP held")
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signals._held.clear()


@pytest.mark.postgres
def test_behind_pgbouncer_the_leader_applies_the_apps_changes_by_polling(
    tmp_path: Path, bounced_db: str, write_schedule: Callable[[str], Path]
) -> None:
    # LISTEN needs a session of its own, which transaction pooling does not keep: the counter's poll applies them.
    clocks = Clocks(tmp_path, bounced_db)
    try:
        leader = clocks(write_schedule(BEAT))
        leader.wait_for("clock.ready")
        clock = dynoclock.connect(bounced_db)
        clock.add("tick", every="1s", command=TICK)
        leader.wait_for("api_jobs.applied", job="tick", change="added")
        wait_until(lambda: len(tick_slots(tmp_path)) >= 2, "two ticks")
        clock.remove("tick")
        leader.wait_for("api_jobs.removed", job="tick")
        assert "prepared statement" not in leader.text()
    finally:
        clocks.close()
