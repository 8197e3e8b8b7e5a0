"""Slots of one job that run one after another, oldest first: a takeover's catch-up and claims that waited.

A catch-up (``catch_up: all``) and the slots whose claims waited out a database outage come late and
together: started together, ``overlap: skip`` would drop all but one. Each job has one queue here, drained by
one worker of the runner: a slot waits until the job's other runs are over, then runs (``Runner.execute``
claims it on its own). With ``catch_up: one`` a slot with a newer one queued behind it is claimed and recorded
``skipped``, coalesced into that one. When the clock stops, or stops leading, the rest is handed over: one
log line names the slots, claims already made are given back, and the next leader's catch-up finds the
slots as gaps between rows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from dynoclock.config.loader import Job
from dynoclock.observe.logs import short_error
from dynoclock.observe.timefmt import iso_utc
from dynoclock.run.outcome import NOT_CLAIMED, Outcome, RunFields
from dynoclock.state.tables import RunReason

if TYPE_CHECKING:
    from dynoclock.run.runner import Runner

# What Runner.execute returns, with no row written, for a slot it did not claim because the clock was stopping.
_NOT_CLAIMED = Outcome("interrupted", error="the clock was stopping")


@dataclass(frozen=True)
class Queued:
    slot: datetime
    reason: RunReason
    run_id: str | None  # the id of a claim that may have committed (a batch whose answer was lost)


class Backlog:
    """Per job, the slots waiting to run in order; a helper of one ``Runner`` (it uses the runner's own state)."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self._queues: dict[str, list[Queued]] = {}
        self._lock = threading.Lock()

    def add(self, job_id: str, slots: list[datetime], reason: RunReason, run_ids: list[str] | None = None) -> None:
        """Queue ``slots`` after those of ``job_id`` already waiting, in slot order; never blocks."""
        items = [Queued(slot, reason, run_ids[n] if run_ids else None) for n, slot in enumerate(slots)]
        with self._lock:
            idle = job_id not in self._queues
            queue = self._queues.setdefault(job_id, [])
            queue += items
            queue.sort(key=lambda item: item.slot)
        if idle:
            job = self.runner.jobs.get(job_id)
            if job is None:  # removed before its catch-up began: nothing of it runs
                with self._lock:
                    self._queues.pop(job_id, None)
                return
            self.runner.start_at(lambda: self._drain(job), self.runner.clock.now())

    def _drain(self, job: Job) -> None:
        try:
            self._run_in_order(job)
        except BaseException:  # the job's queue must not stay behind with no worker to drain it: say what it held
            with self._lock:
                left = self._queues.pop(job.id, [])
            if left:
                self._hand_over(job, left)
            raise

    def _run_in_order(self, job: Job) -> None:
        # Runs of this queue never count as overlapping the job's other runs: each waits for them to end instead.
        own = job if job.overlap == "allow" else replace(job, overlap="allow")
        while True:
            term = self.runner.takeovers  # before any look at leadership: see _hand_over
            with self._lock:
                queue = self._queues[job.id]
                if not queue:
                    del self._queues[job.id]
                    return
                item = queue.pop(0)
                newer = bool(queue)
            if self._stopped():
                if self._hand_over(job, [item], term):
                    return
                continue
            if newer and job.catch_up == "one":
                outcome = self._coalesce(job, item)
            else:
                if job.overlap != "allow":
                    self.runner.inflight.wait_for_job(job.id, self.runner.stopping)
                outcome = self.runner.execute(own, item.slot, reason=item.reason, run_id=item.run_id)
            handed = outcome.status in ("standby", "released") or outcome == _NOT_CLAIMED
            if handed and self._hand_over(job, [item], term):
                return

    def _stopped(self) -> bool:
        runner = self.runner
        return runner.stopping.is_set() or (runner.is_leader is not None and not runner.is_leader())

    def _coalesce(self, job: Job, item: Queued) -> Outcome:
        """``catch_up: one``: a newer slot of the job is queued behind this one, which is recorded skipped."""
        runner = self.runner
        if runner.claims is None:
            return Outcome("skipped")
        run_id = item.run_id or runner.claims.new(job.id, item.slot).run_id
        fields: RunFields = {"job": job.id, "run_id": run_id, "scheduled_for": item.slot}
        if item.reason != "schedule":
            fields["reason"] = item.reason
        claimed = runner.claims.one(job, item.slot, run_id, item.reason, fields)
        if claimed != "won":
            return Outcome(NOT_CLAIMED[claimed])
        return runner.report(Outcome("skipped", error="catch_up=one: coalesced into a later run"), fields, None)

    def _hand_over(self, job: Job, items: list[Queued], term: int | None = None) -> bool:
        """The clock stops or no longer leads: leave the rest to the next leader, and say so (True). ``term``: the
        runner's takeovers when the item was taken; if this clock took the lease again since, the items are put
        back and False returned, for the caller to go on draining (or True if another drainer has them).

        A takeover's catch-up reads the ledger: one that read it before a claim here was given back counted the
        slot as taken, and one that queued slots here before they were popped with the rest saw them queued.
        Either way the slot would be left with no row, so it stays ours: claimed again (under the same run id,
        the claim decides), or skipped as a catch-up's slot would be. A takeover after the check below reads
        the ledger after every give-back, and queues what it plans for a new drainer."""
        runner = self.runner
        with self._lock:
            items += self._queues.pop(job.id, [])
        for item in items:
            if item.run_id is not None:  # a claim that may have committed unanswered: give it back
                self._give_back(item.run_id, term)
        if term is not None and runner.takeovers != term and not runner.stopping.is_set():
            with self._lock:
                queue = self._queues.get(job.id)
                others = queue is not None  # a drainer was started for slots queued after the pop
                queue = self._queues.setdefault(job.id, [])
                queue += items
                queue.sort(key=lambda item: item.slot)
            return others
        slots = sorted(item.slot for item in items)
        self.runner.events.emit(
            "clock.handed_over", level="warning", job=job.id, slots=len(slots), first=iso_utc(slots[0]),
            last=iso_utc(slots[-1]), note="not run here: the next leader's catch-up runs them within misfire_grace",
        )  # fmt: skip
        return True

    def _give_back(self, run_id: str, term: int | None) -> None:
        """Delete a claim that never started; while the database is away, retry until it is done, the clock
        stops (its row is then a dead clock's for the next leader to close), or this clock leads again (the
        claim is then its own to run)."""
        runner, delay = self.runner, 0.5
        writer = runner.writer
        while writer is not None:
            try:
                writer.release(run_id)
                return
            except Exception as exc:
                runner.events.emit("ledger.error", level="warning", operation="unclaim", run_id=run_id,
                                   error=short_error(exc), retry_in_s=delay)  # fmt: skip
            if term is None or runner.takeovers != term or runner.clock.wait(runner.stopping, delay):
                return
            delay = min(delay * 2, 10.0)
