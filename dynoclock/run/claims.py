"""Every claim of a slot goes through here: a run happens only on a claim this clock won.

A claim inserts the run's row, keyed by (job, scheduled_for); the ledger's unique key makes every other
claim of that slot lose (state/ledger.py). Three ways in:
- ``Claims.batch``: the slots due together, claimed in one transaction by the dispatcher
  (daemon/dispatch.py) ``LEAD`` before they are due, so the claim is done by the time the run should start.
- ``Claims.one``: a slot claimed on its own (catch-up, "run now", ``run JOB``, a batch whose answer was
  lost), retried with backoff while the database is away, until the slot's ``misfire_grace`` ends.
- ``Claims.reclaim``: a run a dead clock left behind, taken over to run again (``on_interrupted: retry``).
``Claims.begin`` then marks a won claim started, in the ledger, just before its run starts.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Literal, NamedTuple

from dynoclock.config.durations import format_duration
from dynoclock.config.loader import Job
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.run.outcome import RunFields
from dynoclock.runid import new_run_id
from dynoclock.state.lease import Fence
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim, LeaseLost, Run
from dynoclock.state.tables import RunReason
from dynoclock.state.writer import RunWriter, StartAnswer
from dynoclock.timesource import Clock

LEAD = timedelta(milliseconds=250)  # how early a slot is claimed before it is due
# How early a claimed run's start write is asked for before it starts: its answer (a round trip to Postgres, a
# turn of the writer's thread) is in by the start, which only waits for a worker's wake-up. 50 ms, not less: the
# start writes of a burst of 1,000 runs take 20-35 ms (SQLite, on a 2-core VM), and asked for 5 ms ahead, half of
# the burst was handed over 30 ms after its slot. A clock killed in those milliseconds leaves the row `running`
# (closed as interrupted by the next leader, not run twice); a clock that stops gives the start write back with
# the claim.
BEGIN_AHEAD = timedelta(milliseconds=50)
ClaimResult = Literal["won", "lost", "gave_up", "standby"]


class Begin(NamedTuple):
    """A start write asked for at ``at`` (``Claims.request_begin``), its answer to come."""

    answer: StartAnswer
    at: datetime


class Claims:
    def __init__(
        self,
        ledger: Ledger,
        writer: RunWriter,
        events: EventLog,
        clock: Clock,
        clock_id: str,
        stopping: threading.Event,
    ):
        self.ledger = ledger
        self.writer = writer
        self.events = events
        self.clock = clock
        self.clock_id = clock_id
        self.stopping = stopping
        self.fence: Callable[[], Fence | None] = lambda: None  # the leader's lease sets it (daemon/leadership.py)

    def new(self, job_id: str, slot: datetime, version: int | None = None) -> Claim:
        """A claim to make, under the run id this clock will use if it wins (``version``: an api job's)."""
        return Claim(new_run_id(), job_id, slot, self.clock_id, version=version)

    def batch(self, claims: list[Claim], stale: set[str] | None = None) -> set[str]:
        """Claim due slots in one transaction; returns the run ids won. Raises if the database is away: the batch
        may then have committed before its answer was lost, so each is retried under the same run id. Claims of
        api jobs changed or removed since go to ``stale``."""
        return self.ledger.claim_many(claims, self.fence(), stale)

    def one(self, job: Job, slot: datetime, run_id: str, reason: RunReason, fields: RunFields) -> ClaimResult:
        """Claim one slot; while the database is unreachable, retry with backoff until the slot's grace ends.

        won: ours to run. lost: another claim won (never run it). gave_up: recorded missed (once the database is back).
        """

        def claim() -> ClaimResult:
            stale: set[str] = set()
            try:
                if self.ledger.claim(run_id, job.id, slot, self.clock_id, reason, self.fence(), job.version, stale):
                    return "won"
            except LeaseLost:
                self.events.emit("run.standby", level="warning", **fields, note="this clock no longer leads")
                return "standby"
            if stale:
                self.stale(fields)
            else:
                self.duplicate(fields)
            return "lost"

        missed = partial(self.writer.not_run_later, job.id, slot, "missed")
        return self._retrying(job, slot, fields, claim, missed, missed_when_stopping=True)

    def begin(
        self, job: Job, slot: datetime, run_id: str, attempt: int, fields: RunFields, requested: Begin | None = None
    ) -> ClaimResult:
        """Just before a claimed run starts, write that it starts (``RunWriter.begin``); while the database is
        unreachable, retry with backoff until the slot's grace ends. The run never starts on a claim the ledger
        does not show started: a clock cut off from the database would otherwise run a slot that the next leader,
        finding it still ``claimed``, runs again.

        won: started, run it. lost: another clock took the run over (never run it). gave_up: never started
        (recorded missed once the database is back), or the clock is stopping (the next leader runs it).
        ``requested``: the start already asked for when the run fell due (``Runner.submit``): its answer first.
        """
        if requested is not None:
            with contextlib.suppress(Exception):  # the database was away: retried below
                if requested.answer.result():  # asked for as the run fell due, and in before it was handed over
                    return "won"
        at = requested.at if requested is not None else self.clock.now()
        first = [requested.answer] if requested is not None else []

        def start() -> ClaimResult:
            if first.pop().result() if first else self.writer.begin(run_id, attempt, at):
                return "won"
            self.events.emit("run.duplicate", **fields, note="taken over by another clock before it started; "
                             "not run here")  # fmt: skip
            return "lost"

        missed = partial(self.writer.missed_later, run_id)
        return self._retrying(job, slot, fields, start, missed, missed_when_stopping=False)

    def _retrying(
        self,
        job: Job,
        slot: datetime,
        fields: RunFields,
        write: Callable[[], ClaimResult],
        record_missed: Callable[[str], None],
        missed_when_stopping: bool,
    ) -> ClaimResult:
        """``write`` until the database answers, retried with doubling delays while it is unreachable. Past the
        slot's ``misfire_grace`` (or, with ``missed_when_stopping``, once the clock stops) the slot is given up:
        ``record_missed`` records it once the database is back. A clock that stops otherwise just gives up."""
        delay = 0.5
        while True:
            try:
                return write()
            except Exception as exc:
                if self.stopping.is_set() and not missed_when_stopping:
                    return "gave_up"
                if self.clock.now() > slot + job.misfire_grace or self.stopping.is_set():
                    error = f"database unreachable until past misfire_grace={format_duration(job.misfire_grace)}"
                    self.events.emit("run.missed", level="error", **fields, status="missed", error=error)
                    record_missed(error)
                    return "gave_up"
                self.events.emit(
                    "ledger.unreachable", level="warning", **fields, retry_in_s=delay, error=short_error(exc)
                )
                if self.clock.wait(self.stopping, delay):
                    return "gave_up"
                delay = min(delay * 2, 10.0)

    def request_begin(self, run_id: str, attempt: int) -> Begin:
        """Ask for a run's start write now, without waiting (``Claims.begin`` then waits for its answer)."""
        at = self.clock.now()
        return Begin(self.writer.request_begin(run_id, attempt, at), at)

    def reclaim(self, run: Run, reason: RunReason = "retry") -> bool:
        """Take over a dead clock's run to run it (again); False if another clock did first."""
        if not self.ledger.reclaim(run, self.clock_id, reason):
            return False
        self.events.emit("run.reclaimed", job=run.job, run_id=run.run_id, scheduled_for=run.scheduled_for,
                         previous_clock=run.clock)  # fmt: skip
        return True

    def stale(self, fields: RunFields) -> None:
        self.events.emit("run.stale", **fields, note="the job was changed or removed from the app: not run")

    def duplicate(self, fields: RunFields) -> None:
        self.events.emit("run.duplicate", **fields, note="already claimed; not run here")
