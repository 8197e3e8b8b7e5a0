"""The life of one run, in one place: claim, pause and overlap, jitter, attempts and retries, the log line,
the record, pings and alerts.

A run waits for its start time in the timer's heap (run/timer.py), then runs on
the worker pool (run/workers.py); the watchdog (run/watchdog.py) enforces each
attempt's timeout and stops cancelled ones, so a hung job never starves the
others and never holds the process past shutdown. Slots are claimed through
run/claims.py; every row written after the claim goes through state/writer.py.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from dynoclock.actions.base import JobTimeout, RunContext
from dynoclock.config.durations import format_duration
from dynoclock.config.loader import Job, Schedule
from dynoclock.observe.logs import EventLog, clip, log, short_error
from dynoclock.observe.redact import redact
from dynoclock.observe.timefmt import to_ms
from dynoclock.quiet import starting
from dynoclock.run.backlog import Backlog
from dynoclock.run.claims import Begin, ClaimResult, Claims
from dynoclock.run.handover import Due, HandOver
from dynoclock.run.inflight import InFlight
from dynoclock.run.notify import Notifier, RunInfo
from dynoclock.run.outcome import NOT_CLAIMED, Outcome, RunFields, recorded, run_action
from dynoclock.run.registry import Registry
from dynoclock.run.timer import Timer
from dynoclock.run.watchdog import STOP_GRACE, Watch, Watchdog
from dynoclock.run.workers import WorkerPool
from dynoclock.runid import new_run_id
from dynoclock.schedule.triggers import jitter_offset
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Run
from dynoclock.state.tables import RunReason
from dynoclock.state.writer import RunWriter, StartAnswer
from dynoclock.timesource import SYSTEM, Clock

LEVELS = {"ok": "info", "skipped": "warning"}  # an outcome's log level; any other: error


class Runner:
    """Runs jobs of one schedule; ``submit`` is called from the scheduler thread and never blocks."""

    def __init__(
        self,
        schedule: Schedule,
        events: EventLog = log,
        clock_id: str = "",
        ledger: Ledger | None = None,
        is_leader: Callable[[], bool] | None = None,
        notifier: Notifier | None = None,
        clock: Clock = SYSTEM,
    ):
        self.schedule = schedule
        self.events = events
        self.clock_id = clock_id
        self.clock = clock
        self.ledger = ledger  # None: no state (e.g. `run JOB` when the database is down)
        self.is_leader = is_leader  # None: always claim (a single clock, or `run JOB`)
        self.takeovers = 0  # times this clock took the lease (daemon/leadership.py counts, run/backlog.py reads)
        self.notifier = notifier or Notifier(events, clock=clock, ledger=ledger)
        self.stopping = threading.Event()
        self.writer: RunWriter | None = None  # every row written after a claim goes through it
        self.claims: Claims | None = None  # every claim of a slot
        if ledger is not None:
            self.writer = RunWriter(ledger, events, clock, clock_id)
            self.claims = Claims(ledger, self.writer, events, clock, clock_id, self.stopping)
        self.paused: set[str] = set()  # jobs paused from the status page (the leader refreshes this)
        self.pool = WorkerPool(schedule.workers)
        self.timer = Timer(clock=clock)
        self.watchdog = Watchdog(self.timer, clock=clock)
        self.inflight = InFlight(clock)  # pending, waiting and running runs
        self.handover = HandOver(self.inflight, self.pool, self.timer, clock)
        self.backlog = Backlog(self)  # slots that run in order (submit_in_order)
        self.jobs = Registry(schedule.jobs, clock)  # what ``submit`` finds by id
        redact.add(schedule.secrets)

    # ---- entry points ---------------------------------------------------------------------

    def submit(
        self,
        job_id: str,
        slot: datetime,
        reason: RunReason = "schedule",
        reclaimed: Run | None = None,
        claimed_as: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Queue the run of ``job_id`` for ``slot`` (arguments as for ``execute``): it waits in the timer's heap until
        its start, then runs on the worker pool."""
        job = self.jobs.get(job_id)
        if job is None:  # removed, and retired long ago: a run claimed before cannot wait this long
            self.events.emit("run.unknown_job", level="error", job=job_id, scheduled_for=slot)
            if claimed_as is not None:
                self._release({"job": job_id, "run_id": claimed_as, "scheduled_for": slot})
            return
        requested: list[Begin] = []
        if claimed_as is not None:
            self.inflight.wait_for_start({"job": job.id, "run_id": claimed_as, "scheduled_for": slot})

        def due() -> bool | StartAnswer:
            """On the timer's thread, BEGIN_AHEAD before the start: a claimed run's start write is asked for then, so
            that its answer is in by the start, and so that the runs of a burst do not each wait for theirs in waves
            of ``workers``; the run goes to a worker at its start once the answer is in (``start_at``)."""
            if claimed_as is None:
                return True
            if not self.inflight.start(claimed_as):
                return False  # released at shutdown while it waited
            if self.claims is not None and not self.stopping.is_set() and self._may_start(job):
                requested.append(self.claims.request_begin(claimed_as, reclaimed.attempt + 1 if reclaimed else 1))
                return requested[0].answer
            return True

        def task() -> None:
            self.execute(job, slot, reason=reason, reclaimed=reclaimed, claimed_as=claimed_as, run_id=run_id,
                         requested=requested[0] if requested else None)  # fmt: skip

        self.start_at(task, slot + jitter_offset(job.id, slot, job.jitter), due)

    def submit_in_order(
        self, job_id: str, slots: list[datetime], reason: RunReason, run_ids: list[str] | None = None
    ) -> None:
        """Run slots of one job one after another, oldest first, after those it already has waiting (a catch-up,
        claims that waited for the database: run/backlog.py); ``run_ids`` as ``run_id`` for ``execute``."""
        self.backlog.add(job_id, slots, reason, run_ids)

    def start_at(self, task: Callable[[], None], start_at: datetime, due: Due | None = None) -> None:
        """Hand ``task`` to the pool at ``start_at`` (run/handover.py); ``due`` may drop it, or have it wait for
        its start write's answer."""
        self.handover.at(task, start_at, due)

    def _may_start(self, job: Job) -> bool:
        """Whether a run of ``job`` falling due now would start (not paused, no overlap to skip)."""
        return job.id not in self.paused and not (job.overlap == "skip" and self.inflight.running(job.id))

    def running_count(self) -> int:
        return len(self.inflight.running())

    def release_waiting(self) -> None:
        """At shutdown, before the lease goes: no new runs, and the slots claimed but not started are given back,
        so that the next leader, whose catch-up reads the ledger, finds them free and runs them."""
        self.stopping.set()
        for fields in self.inflight.release_waiting():
            self._release(fields)

    def drain(self, deadline: float) -> None:
        """At shutdown: release claimed runs still waiting to start, wait for running ones until ``deadline``
        (monotonic), then stop what is left."""
        self.release_waiting()
        self.inflight.wait_idle(deadline)
        for ctx in self.inflight.running():
            ctx.cancel("shutdown")
        self.inflight.wait_idle(self.clock.monotonic() + STOP_GRACE + 0.5)

    def run_foreground(self, job: Job, reason: RunReason = "manual") -> Outcome:
        """``run JOB``: one attempt now; returns its outcome, even when the job will not stop (a Python function
        stuck in C code past its timeout is written off by the watchdog, and this returns what it recorded)."""
        run_id = new_run_id()
        done = self.inflight.expect(run_id)

        def work() -> None:
            outcome = self.execute(job, self.clock.now(), retries=False, reason=reason, run_id=run_id)
            self.inflight.ended(run_id, done, outcome)

        threading.Thread(target=work, name=f"run-{job.id}", daemon=True).start()
        return done.result()

    # ---- one run ---------------------------------------------------------------------------

    def execute(
        self,
        job: Job,
        slot: datetime,
        retries: bool = True,
        reason: RunReason = "schedule",
        reclaimed: Run | None = None,
        claimed_as: str | None = None,
        run_id: str | None = None,
        requested: Begin | None = None,
    ) -> Outcome:
        """One run of ``job`` for ``slot``: claim, pause, overlap, jitter, attempts with retries; the last outcome.

        ``claimed_as``: the slot is already claimed under this run id (the dispatcher claims in batches);
        ``run_id``: claim under this id (a batch claim whose answer was lost may have committed it);
        ``reclaimed``: a dead clock's row taken over to run again; ``requested``: its start write, already asked for
        (``submit``): its answer is taken first; given back with the claim if the clock stops before the run starts.
        """
        if claimed_as is None and self.is_leader is not None and not self.is_leader():
            return Outcome("standby")  # the leader runs this slot; standbys only keep time
        run_id = claimed_as or (reclaimed.run_id if reclaimed else run_id or new_run_id())
        fields: RunFields = {"job": job.id, "run_id": run_id, "scheduled_for": slot}
        if reason != "schedule":
            fields["reason"] = reason
        if self.stopping.is_set():
            if claimed_as is not None:  # claimed in a batch, not started when the clock stopped: give it back
                return self._release(fields, requested)
            return Outcome("interrupted", error="the clock was stopping")  # not claimed: the next leader runs it
        if self.claims is not None and reclaimed is None and claimed_as is None:
            claimed = self.claims.one(job, slot, run_id, reason, fields)
            if claimed != "won":
                return Outcome(NOT_CLAIMED[claimed])
        first = reclaimed.attempt + 1 if reclaimed else 1
        said: ClaimResult | None = None  # the start write's answer: the row says started before the run does
        # A start write asked for as the run fell due (``submit``): its answer first.
        if (
            requested
            and self.claims
            and (said := self.claims.begin(job, slot, run_id, first, fields, requested)) != "won"
        ):
            return Outcome(NOT_CLAIMED[said])
        # Claimed LEAD ahead, handed over BEGIN_AHEAD ahead, jitter: wait for the start; pause, overlap judged then.
        start_at = slot + jitter_offset(job.id, slot, job.jitter) if job.jitter else slot
        while (early := (start_at - self.clock.now()).total_seconds()) > 0:  # a wait may end a hair early
            if self.clock.wait(self.stopping, early):
                return self._release(fields, requested)
        if job.id in self.paused and reason != "manual":
            return self.report(Outcome("skipped", error="paused"), fields, None)
        running = self.inflight.running(job.id)
        if running and job.overlap == "skip":
            return self.report(
                Outcome("skipped", error="overlap=skip: the previous run is still running"), fields, None
            )
        if running and job.overlap == "replace":
            for ctx in running:
                ctx.cancel("replaced")
        if (
            said is None
            and self.claims
            and not self.stopping.is_set()
            and (said := self.claims.begin(job, slot, run_id, first, fields)) != "won"
        ):
            return Outcome(NOT_CLAIMED[said])
        begun = said == "won"  # the row says started: from then on the run runs, even if the clock starts stopping
        tail: deque[str] = deque(maxlen=20)  # the run's last output lines, for pings
        if self.notifier.sends_at_start(job):
            self.notifier.run_started(job.ping, job.ping_style, RunInfo(job.id, run_id, slot, first, "running"), job)
        outcome = self._attempts(job, slot, run_id, first, retries, fields, tail, begun)
        if outcome.status == "abandoned":
            written_off = self.inflight.settled(run_id)
            return written_off if written_off is not None else outcome
        if outcome.status in ("ok", "failed", "timeout"):
            self._notify_finished(job, outcome, RunInfo(job.id, run_id, slot, first, "running"), tail)
        return outcome

    def _attempts(
        self,
        job: Job,
        slot: datetime,
        run_id: str,
        first: int,
        retries: bool,
        fields: RunFields,
        tail: deque[str],
        begun: bool = False,
    ) -> Outcome:
        """The first attempt and its retries, with doubling delays that never pass the job's next slot."""
        attempt = first
        while True:
            outcome = self._attempt(job, slot, run_id, attempt, fields, tail, begun and attempt == first)
            if outcome.status not in ("failed", "timeout") or not retries or attempt - first >= job.retries:
                return outcome
            wait = min(job.retry_delay * 2 ** (attempt - 1), job.retry_max_delay)
            next_slot = job.next_after(slot)
            if next_slot is not None and self.clock.now() + wait >= next_slot:
                dropped = {
                    **fields,
                    "reason": "the next slot comes first",
                }  # the run's own reason is in its other lines
                self.events.emit("run.retry_dropped", level="warning", **dropped)
                return outcome
            self.events.emit("run.retry", **fields, attempt=attempt + 1, delay=format_duration(wait))
            if self.clock.wait(self.stopping, wait.total_seconds()):
                return outcome
            attempt += 1

    def _attempt(
        self,
        job: Job,
        slot: datetime,
        run_id: str,
        attempt: int,
        fields: RunFields,
        tail: deque[str],
        begun: bool = False,
    ) -> Outcome:
        # A run whose row says started runs: given back, it would stay `running` in the ledger (a release only
        # takes back a claim), and the next leader would close it as interrupted, never run.
        if self.stopping.is_set() and not begun:
            if attempt == 1:
                return self._release(fields)
            return self.report(Outcome("interrupted", error="the clock stopped before the retry"), fields, None)
        started = self.clock.now()
        starting()
        ctx = RunContext(
            job.id, slot, run_id, attempt, job.timeout, output=self._output_logger(fields, tail), clock=self.clock
        )
        self.inflight.add(ctx)
        if self.writer is not None:
            self.writer.started(run_id, attempt, started)
        self.events.emit("run.start", **fields, attempt=attempt, lateness_ms=to_ms(started - slot))
        watch = self.watchdog.watch(ctx, lambda w: self._written_off(w, job, fields, attempt, started))
        outcome = run_action(job, ctx, watch)
        self.inflight.forget(ctx)
        if outcome.status == "abandoned":
            return outcome  # written off by the watchdog, which reported it
        ended = self.clock.now()
        outcome.attempt, outcome.duration = attempt, ended - started
        return self.report(outcome, fields, started, ended)

    def _written_off(self, watch: Watch, job: Job, fields: RunFields, attempt: int, started: datetime) -> None:
        """The watchdog gave up on an attempt that would not stop: report it for it, and replace its worker."""
        reason = watch.ctx.cancel_reason
        if reason == "timeout":
            outcome = Outcome("timeout", error=str(JobTimeout(job.timeout)))
        else:
            outcome = Outcome("interrupted", error="stopped at shutdown" if reason == "shutdown" else "replaced")
        outcome.attempt, outcome.duration = attempt, self.clock.now() - started
        self.events.emit("run.abandoned", level="warning", job=job.id, run_id=watch.ctx.run_id,
                         reason="still running after it was stopped; its result will be ignored")  # fmt: skip
        self.inflight.forget(watch.ctx)
        self.report(outcome, fields, started)
        self.inflight.written_off(watch.ctx.run_id, outcome)
        self.pool.write_off(watch.ident)

    # ---- reporting -------------------------------------------------------------------------

    def report(
        self, outcome: Outcome, fields: RunFields, started: datetime | None, ended: datetime | None = None
    ) -> Outcome:
        """Store (if its status is recorded), log and return the outcome of a run started at ``started`` (None:
        it never started) and over at ``ended`` (None: now)."""
        # Every outcome passes here before it is stored, logged, shown or sent: mask secrets once, for all of them
        # (an error page or a failing statement may echo a token).
        if outcome.error:
            outcome.error = redact(outcome.error)
        if outcome.detail:
            outcome.detail = redact(outcome.detail)
        duration = to_ms(outcome.duration) if started is not None else None
        if self.writer is not None and recorded(outcome.status):
            self.writer.finished(fields["run_id"], outcome.status, outcome.error, duration, ended or self.clock.now())
        level = LEVELS.get(outcome.status, "error")
        extra: dict[str, object] = {"status": outcome.status}
        if started is not None:
            lateness = to_ms(started - fields["scheduled_for"])
            extra |= {"attempt": outcome.attempt, "lateness_ms": lateness, "duration_ms": duration}
        if outcome.detail:
            extra["detail"] = clip(outcome.detail)
        if outcome.error:
            extra["error"] = clip(outcome.error)
        self.events.emit(f"run.{outcome.status}", level=level, **fields, **extra)
        return outcome

    def _notify_finished(self, job: Job, outcome: Outcome, info: RunInfo, tail: deque[str]) -> None:
        """Pings and alerts once the run is over (after its last retry)."""
        if not self.notifier.sends_at_finish(job):  # most jobs: no run record built for nothing
            self.notifier.note_final(job.id, outcome.status)
            return
        final = replace(
            info, status=outcome.status, attempt=outcome.attempt, error=outcome.error, detail=outcome.detail,
            duration_ms=to_ms(outcome.duration), output="\n".join(tail),
        )  # fmt: skip
        self.notifier.run_finished(job, final)

    def _output_logger(self, fields: RunFields, tail: deque[str]) -> Callable[[str, str], None]:
        def output(stream: str, line: str) -> None:
            tail.append(redact(line))  # the tail goes out with pings
            self.events.emit("run.output", job=fields["job"], run_id=fields["run_id"], stream=stream, line=line)

        return output

    def _release(self, fields: RunFields, requested: Begin | None = None) -> Outcome:
        """Stopping before a claimed run started: give the slot back, so the next leader runs it (its start write
        too, if it was ``requested`` as the run fell due)."""
        if self.writer is not None:
            try:
                if self.writer.release(fields["run_id"], requested.at if requested else None):
                    self.events.emit("run.released", **fields, note="the clock stopped before it started")
                    return Outcome("released")
            except Exception as exc:
                self.events.emit("ledger.error", level="warning", operation="unclaim", error=short_error(exc), **fields)
        return self.report(Outcome("interrupted", error="the clock stopped before the run started"), fields, None)
