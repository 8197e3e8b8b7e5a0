"""Between the scheduler loop and the runner: claims due slots in batches, off the scheduler's thread.

APScheduler hands each due slot to ``due()``, which only queues it. This thread
takes whatever has queued up (one slot, or a whole burst), claims the lot in a
single ledger transaction, and starts the runs it won. Slots are handed over a
moment before they are due (``LEAD``), so the claim is done by the time the run
should start, and the run itself waits for its exact start.
"""

from __future__ import annotations

import queue
import threading
import uuid
from datetime import datetime, timedelta

from dynoclock.observe.logs import short_error
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import Claim

LEAD = timedelta(milliseconds=250)  # how early a slot is claimed before it is due
MAX_BATCH = 1000


class Dispatcher:
    def __init__(self, runner: Runner):
        self.runner = runner
        self._queue: queue.SimpleQueue[tuple[str, datetime]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="dispatcher", daemon=True).start()

    def due(self, job_id: str, slot: datetime) -> None:
        """Called on the scheduler's thread: never blocks."""
        self._queue.put((job_id, slot))

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._dispatch(batch)
            except Exception as exc:  # never let the dispatcher die: the clock would silently stop running jobs
                self.runner.events.emit("dispatch.error", level="error", error=short_error(exc))

    def _dispatch(self, batch: list[tuple[str, datetime]]) -> None:
        runner = self.runner
        if runner.stopping.is_set() or (runner.is_leader is not None and not runner.is_leader()):
            return  # a standby keeps time only; a stopping clock leaves its slots to the next leader
        if runner.ledger is None:
            for job_id, slot in batch:
                runner.submit(job_id, slot)
            return
        claims = [Claim(uuid.uuid4().hex, job_id, slot, runner.clock_id) for job_id, slot in batch]
        try:
            won = runner.ledger.claim_many(claims)
        except Exception:
            # The database is away: each run retries its own claim with backoff, within its misfire_grace, under
            # the same run id, since the batch may have committed before its answer was lost.
            for claim in claims:
                runner.submit(claim.job, claim.slot, run_id=claim.run_id)
            return
        for claim in claims:
            if claim.run_id in won:
                runner.submit(claim.job, claim.slot, claimed_as=claim.run_id)
            else:
                runner.events.emit("run.duplicate", job=claim.job, run_id=claim.run_id, scheduled_for=claim.slot,
                                   note="already claimed; not run here")  # fmt: skip
