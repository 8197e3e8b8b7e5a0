"""The leader's chores: runs left behind by dead clocks, and old history.

A run still ``claimed`` or ``running`` whose clock has sent no heartbeat for DEAD_AFTER was cut off by a crash.
One that never started (its clock died or lost the database between the claim and the start; a run starts only
once its row says ``running``, Claims.begin) was not interrupted: it is taken over and run, once, if its slot is
still within misfire_grace, and recorded ``missed`` otherwise. One that had
started is closed as ``interrupted``, or taken over and run again with ``on_interrupted: retry``. History older than
``history_keep`` is deleted in small batches from a thread of its own, never holding the leader's round.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from dynoclock.config.durations import format_duration
from dynoclock.config.loader import Schedule
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import DEAD_AFTER, Ledger
from dynoclock.state.runs import Run
from dynoclock.timesource import Clock

HOUSEKEEPING_EVERY = 14.0  # seconds between looks for dead clocks' runs: a clock is only dead after DEAD_AFTER
PRUNE_EVERY = 3600.0  # seconds between prunes of old history
PRUNE_PAUSE = 0.05  # seconds between two batches of a prune


class Housekeeping:
    def __init__(self, schedule: Schedule, ledger: Ledger, runner: Runner, events: EventLog, clock: Clock):
        self.schedule = schedule
        self.ledger = ledger
        self.runner = runner
        self.events = events
        self.clock = clock
        self.stopped = threading.Event()
        self._last_round = float("-inf")
        self._last_prune = float("-inf")

    def round(self, others_unfinished: bool = True) -> None:
        """Called on each of the leader's rounds; does its work every HOUSEKEEPING_EVERY (an idle clock's CPU is
        mostly these rounds), and starts a prune every PRUNE_EVERY. ``others_unfinished``: the round found a run
        of another clock unfinished (state/round.py); with none, no clock's runs can be left to close."""
        now = self.clock.monotonic()
        if now - self._last_round < HOUSEKEEPING_EVERY:
            return
        self._last_round = now
        if others_unfinished:
            self.close_dead_runs()
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            threading.Thread(target=self.prune, name="prune", daemon=True).start()

    def close_dead_runs(self) -> None:
        """Close the unfinished runs of dead clocks as interrupted, or run them again (``on_interrupted: retry``)."""
        runner, me = self.runner, self.runner.clock_id
        assert runner.writer is not None and runner.claims is not None
        now = self.clock.now()
        for run in self.ledger.unfinished(now - DEAD_AFTER):
            job = runner.jobs.get(run.job)  # also an api job removed or a one-off handed to its claim
            if run.clock == me:  # ours, in flight (on the first round our heartbeat is not written yet)
                continue
            if run.reason == "manual" and job is not None and run.claimed_at > now - job.timeout - DEAD_AFTER:
                continue  # `run JOB` keeps no heartbeat, but its timeout bounds it: dead only once past that
            runnable = job is not None and job.enabled and job.action is not None
            if run.status == "claimed" and not run.clock.endswith(":manual") and job is not None and runnable:
                self._never_started(run, job.misfire_grace, now)
            elif job is not None and runnable and job.on_interrupted == "retry":
                if runner.claims.reclaim(run):
                    runner.submit(run.job, run.scheduled_for, reason="retry", reclaimed=run)
            elif runner.writer.interrupt(run, f"clock {run.clock} stopped during the run"):
                self.events.emit("run.interrupted", level="error", job=run.job, run_id=run.run_id,
                                 scheduled_for=run.scheduled_for, status="interrupted",
                                 error=f"clock {run.clock} stopped during the run")  # fmt: skip

    def _never_started(self, run: Run, grace: timedelta, now: datetime) -> None:
        runner = self.runner
        assert runner.writer is not None and runner.claims is not None
        if now <= run.scheduled_for + grace:
            if runner.claims.reclaim(run, reason=run.reason):
                runner.submit(run.job, run.scheduled_for, reason=run.reason, reclaimed=run)
            return
        error = f"clock {run.clock} stopped before the run started; past misfire_grace={format_duration(grace)}"
        if runner.writer.interrupt(run, error, status="missed"):
            self.events.emit("run.missed", level="error", job=run.job, run_id=run.run_id,
                             scheduled_for=run.scheduled_for, status="missed", error=error)  # fmt: skip

    def prune(self) -> int:
        """Delete history older than history_keep, a batch at a time with pauses; returns the rows deleted."""
        from dynoclock.state.jobstore import JobStore

        before = self.clock.now() - self.schedule.history_keep
        total = 0
        store = JobStore(self.ledger)
        try:
            while not self.stopped.is_set():
                # Runs, then jobs added from the app that were removed or ran (one-offs) that long ago.
                deleted = self.ledger.prune(before) or store.prune(before)
                total += deleted
                if deleted == 0:
                    break
                self.clock.sleep(PRUNE_PAUSE)
        except Exception as exc:
            self.events.emit("ledger.prune_failed", level="warning", error=short_error(exc))
        if total:
            self.events.emit("ledger.pruned", rows=total, before=before)
        return total
