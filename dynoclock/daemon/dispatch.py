"""Between the scheduler loop and the runner: due slots claimed in batches, off the scheduler's thread.

APScheduler hands each due slot to ``due()``, which only queues it. A thread of its own takes whatever has
queued up (one slot, or a whole burst), claims the lot in one transaction (run/claims.py), and hands the runs
it won to the runner. Slots come ``LEAD`` before they are due; each run waits for its exact start.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import datetime

from dynoclock.observe.logs import short_error
from dynoclock.run.claims import Claims
from dynoclock.run.runner import Runner
from dynoclock.state.runs import Claim, LeaseLost

MAX_BATCH = 1000


class Dispatcher:
    """Between the scheduler loop and the runner: claims due slots in batches, off the scheduler's thread."""

    def __init__(self, claims: Claims | None, runner: Runner, leading: Callable[[], bool]):
        self.claims = claims  # None: no state (every slot is ours)
        self.runner = runner
        self.leading = leading
        self._queue: queue.SimpleQueue[tuple[str, datetime, int | None]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="dispatcher", daemon=True).start()

    def due(self, job_id: str, slot: datetime, version: int | None = None) -> None:
        """Called on the scheduler's thread: never blocks. ``version``: an api job's, which its claim must find."""
        self._queue.put((job_id, slot, version))

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.dispatch(batch)
            except Exception as exc:  # never let the dispatcher die: the clock would silently stop running jobs
                self.runner.events.emit("dispatch.error", level="error", error=short_error(exc))

    def dispatch(self, batch: list[tuple[str, datetime, int | None]]) -> None:
        """Claim ``batch`` (job id, slot, api version) and start the runs won."""
        if self.runner.stopping.is_set() or not self.leading():
            return  # a standby keeps time only; a stopping clock leaves its slots to the next leader
        if self.claims is None:
            for job_id, slot, _ in batch:
                self.runner.submit(job_id, slot)
            return
        claims = [self.claims.new(job_id, slot, version) for job_id, slot, version in batch]
        stale: set[str] = set()
        try:
            won = self.claims.batch(claims, stale)
        except LeaseLost:
            self.runner.events.emit("dispatch.fenced", level="warning", slots=len(claims),
                                    note="the lease was lost: these slots are the next leader's")  # fmt: skip
            return
        except Exception:
            # The database is away: the runs retry their claims with backoff, within misfire_grace, under the same
            # run ids, since the batch may have committed before its answer was lost. Those of one job wait in
            # line: claimed together when the database is back, they would otherwise run over each other.
            late: dict[str, list[Claim]] = {}
            for claim in claims:
                late.setdefault(claim.job, []).append(claim)
            for job_id, mine in late.items():
                self.runner.submit_in_order(job_id, [c.slot for c in mine], "schedule", [c.run_id for c in mine])
            return
        for claim in claims:
            if claim.run_id in won:
                self.runner.submit(claim.job, claim.slot, claimed_as=claim.run_id)
            elif claim.run_id in stale:
                self.claims.stale({"job": claim.job, "run_id": claim.run_id, "scheduled_for": claim.slot})
            else:
                self.claims.duplicate({"job": claim.job, "run_id": claim.run_id, "scheduled_for": claim.slot})
