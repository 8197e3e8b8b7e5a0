"""Executes runs: overlap policy, jitter, the worker limit, the enforced timeout, retries, and the log line.

Each run gets its own thread, and each attempt another, so the runner can
always stop waiting: at the timeout it cancels the attempt (the action's hooks
kill its process or cancel its query; a Python function gets an exception
raised in its thread) and frees the worker slot even if the attempt cannot be
stopped, so a hung job never starves the others. All threads are daemons, so
nothing holds the process past shutdown.
"""

from __future__ import annotations

import ctypes
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .actions.base import JobFailed, JobTimeout, RunCancelled, RunContext
from .config import Job, Schedule
from .durations import format_duration
from .ledger import Ledger, Run
from .logs import EventLog, log, redact, short_error
from .notify import Notifier, RunInfo
from .recorder import Recorder
from .triggers import jitter_offset

STOP_GRACE = 3.0  # seconds an attempt gets to stop after its cancel hooks ran (SIGTERM, then SIGKILL)


@dataclass
class Outcome:
    """How one attempt ended."""

    status: str  # ok | failed | timeout | interrupted | skipped
    detail: str = ""  # what an ok run reports (status=200, rows=3, exit=0)
    error: str = ""  # why it failed, in the schedule's words
    attempt: int = 1
    duration: timedelta = field(default_factory=timedelta)


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
    ):
        self.schedule = schedule
        self.events = events
        self.clock_id = clock_id
        self.ledger = ledger  # None: no state (e.g. `run JOB` when the database is down)
        self.is_leader = is_leader  # None: always claim (a single clock, or `run JOB`)
        self.notifier = notifier or Notifier(events)
        self.recorder = Recorder(ledger, events) if ledger is not None else None
        self._last_final: dict[str, str] = {}  # job id -> status of its last finished run
        self.paused: set[str] = set()  # jobs paused from the status page (the leader refreshes this)
        self.capacity = threading.BoundedSemaphore(schedule.workers)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[str, list[RunContext]] = {}  # job id -> its running attempts
        self._threads: set[threading.Thread] = set()
        redact.add(schedule.secrets)

    # ---- entry points ---------------------------------------------------------------------

    def submit(
        self,
        job_id: str,
        slot: datetime,
        reason: str = "schedule",
        reclaimed: Run | None = None,
        claimed_as: str | None = None,
    ) -> None:
        """Start the run of ``job_id`` for ``slot`` in its own thread.

        ``claimed_as``: the slot is already claimed under this run id (the dispatcher claims in batches);
        ``reclaimed``: a dead clock's row taken over to run again.
        """
        job = self.schedule.jobs[job_id]
        kwargs = {"reason": reason, "reclaimed": reclaimed, "claimed_as": claimed_as}
        thread = threading.Thread(
            target=self.execute, args=(job, slot), kwargs=kwargs, name=f"run-{job_id}", daemon=True
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def submit_in_order(self, job_id: str, slots: list[datetime], reason: str) -> None:
        """Start the runs of several slots of one job (``catch_up: all``) in one thread, oldest first:
        started together, all but one would be dropped by ``overlap: skip``."""
        job = self.schedule.jobs[job_id]

        def run_in_order() -> None:
            try:
                for slot in slots:
                    self._execute(job, slot, True, reason, None, None)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run_in_order, name=f"run-{job_id}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def execute(
        self,
        job: Job,
        slot: datetime,
        retries: bool = True,
        reason: str = "schedule",
        reclaimed: Run | None = None,
        claimed_as: str | None = None,
    ) -> Outcome:
        """One run of ``job`` for ``slot``: claim, overlap, jitter, attempts with retries. Returns the last outcome."""
        try:
            return self._execute(job, slot, retries, reason, reclaimed, claimed_as)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def running_count(self) -> int:
        with self._lock:
            return sum(len(contexts) for contexts in self._active.values())

    def drain(self, deadline: float) -> None:
        """At shutdown: wait for running runs until ``deadline`` (monotonic), then stop what is left."""
        self.stopping.set()
        while time.monotonic() < deadline:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return
            threads[0].join(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
        with self._lock:
            running = [ctx for contexts in self._active.values() for ctx in contexts]
            threads = list(self._threads)
        for ctx in running:
            ctx.cancel("shutdown")
        end = time.monotonic() + STOP_GRACE + 0.5
        for thread in threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))

    # ---- one run ---------------------------------------------------------------------------

    def _execute(
        self, job: Job, slot: datetime, retries: bool, reason: str, reclaimed: Run | None, claimed_as: str | None
    ) -> Outcome:
        if claimed_as is None and self.is_leader is not None and not self.is_leader():
            return Outcome("standby")  # the leader runs this slot; standbys only keep time
        run_id = claimed_as or (reclaimed.run_id if reclaimed else uuid.uuid4().hex)
        fields: dict[str, Any] = {"job": job.id, "run_id": run_id, "scheduled_for": slot}
        if reason != "schedule":
            fields["reason"] = reason
        if self.stopping.is_set():
            return Outcome("interrupted", error="the clock was stopping")  # not claimed: the next leader runs it
        if self.ledger is not None and reclaimed is None and claimed_as is None:
            claimed = self._claim(job, slot, run_id, reason, fields)
            if claimed is not True:
                return Outcome("duplicate" if claimed is False else "missed")
        if job.id in self.paused and reason != "manual":
            return self._report(Outcome("skipped", error="paused"), fields, None)
        with self._lock:
            running = list(self._active.get(job.id, []))
        if running and job.overlap == "skip":
            return self._report(
                Outcome("skipped", error="overlap=skip: the previous run is still running"), fields, None
            )
        if running and job.overlap == "replace":
            for ctx in running:
                ctx.cancel("replaced")
        # Slots are claimed a moment ahead (daemon.LEAD), and jitter delays a start: wait for the start time.
        start_at = slot + jitter_offset(job.id, slot, job.jitter)
        if start_at > _now() and self.stopping.wait((start_at - _now()).total_seconds()):
            return self._release(fields)
        first = reclaimed.attempt + 1 if reclaimed else 1
        tail: deque[str] = deque(maxlen=20)  # the run's last output lines, for pings
        info = RunInfo(job.id, run_id, slot, first, "running")
        self.notifier.run_started(job.ping, job.ping_style, info)
        outcome = self._attempts(job, slot, run_id, first, retries, fields, tail)
        if outcome.status in ("ok", "failed", "timeout"):
            self._notify_finished(job, outcome, info, tail)
        return outcome

    def _attempts(
        self, job: Job, slot: datetime, run_id: str, first: int, retries: bool, fields: dict[str, Any], tail: deque[str]
    ) -> Outcome:
        """The first attempt and its retries, with doubling delays that never pass the job's next slot."""
        attempt = first
        while True:
            outcome = self._attempt(job, slot, run_id, attempt, fields, tail)
            if outcome.status not in ("failed", "timeout") or not retries or attempt - first >= job.retries:
                return outcome
            wait = min(job.retry_delay * 2 ** (attempt - 1), job.retry_max_delay)
            next_slot = job.next_after(slot)
            if next_slot is not None and _now() + wait >= next_slot:
                self.events.emit("run.retry_dropped", level="warning", **fields, reason="the next slot comes first")
                return outcome
            self.events.emit("run.retry", **fields, attempt=attempt + 1, delay=format_duration(wait))
            if self.stopping.wait(wait.total_seconds()):
                return outcome
            attempt += 1

    def _attempt(
        self, job: Job, slot: datetime, run_id: str, attempt: int, fields: dict[str, Any], tail: deque[str]
    ) -> Outcome:
        while not self.capacity.acquire(timeout=0.25):  # all workers busy: wait, unless stopping
            if self.stopping.is_set():
                if attempt == 1:
                    return self._release(fields)
                return self._report(Outcome("interrupted", error="the clock stopped before the retry"), fields, None)
        try:
            started = _now()
            ctx = RunContext(job.id, slot, run_id, attempt, job.timeout, output=self._output_logger(fields, tail))
            with self._lock:
                self._active.setdefault(job.id, []).append(ctx)
            if self.recorder is not None:
                self.recorder.started(run_id, attempt, self.clock_id, started)
            self.events.emit("run.start", **fields, attempt=attempt, lateness_ms=_ms(started - slot))
            outcome = self._run_action(job, ctx)
            outcome.attempt, outcome.duration = attempt, _now() - started
            with self._lock:
                self._active[job.id].remove(ctx)
                if not self._active[job.id]:
                    del self._active[job.id]
            return self._report(outcome, fields, started)
        finally:
            self.capacity.release()

    def _run_action(self, job: Job, ctx: RunContext) -> Outcome:
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["detail"] = job.action.run(ctx) or ""
            except JobFailed as exc:
                result["error"] = exc
            except BaseException as exc:  # the job's own bug: report it, never crash the clock
                result["error"] = JobFailed(f"{type(exc).__name__}: {exc}")
            finally:
                ctx.wake.set()

        thread = threading.Thread(target=target, name=f"job-{job.id}", daemon=True)
        thread.start()
        if not ctx.wake.wait(timeout=ctx.remaining):
            ctx.cancel("timeout")
        if thread.is_alive() or ctx.cancel_reason:
            thread.join(timeout=STOP_GRACE / 2)
            if thread.is_alive() and thread.ident is not None:
                _raise_in_thread(thread.ident, RunCancelled)  # a pure-Python loop stops here
                thread.join(timeout=STOP_GRACE / 2)
            if thread.is_alive():
                self.events.emit("run.abandoned", level="warning", job=job.id, run_id=ctx.run_id,
                                 reason="still running after its timeout; its result will be ignored")  # fmt: skip
        if ctx.cancel_reason == "timeout":
            return Outcome("timeout", error=str(JobTimeout(job.timeout)))
        if ctx.cancel_reason == "shutdown":
            return Outcome("interrupted", error="stopped at shutdown")
        if ctx.cancel_reason == "replaced":
            return Outcome("interrupted", error="overlap=replace: a newer run started")
        if "error" in result:
            # The action may notice its deadline a moment before we do (SQLite's progress handler,
            # Postgres' statement_timeout, an HTTP read timeout): still a timeout, not a failure.
            status = "timeout" if isinstance(result["error"], JobTimeout) else "failed"
            return Outcome(status, error=str(result["error"]))
        return Outcome("ok", detail=str(result.get("detail", "")))

    # ---- reporting -------------------------------------------------------------------------

    def _report(self, outcome: Outcome, fields: dict[str, Any], started: datetime | None) -> Outcome:
        duration = _ms(outcome.duration) if started is not None else None
        if self.recorder is not None:
            self.recorder.finished(fields["run_id"], outcome.status, outcome.error, duration, _now())
        level = {"ok": "info", "skipped": "warning"}.get(outcome.status, "error")
        extra: dict[str, Any] = {"status": outcome.status}
        if started is not None:
            lateness = _ms(started - fields["scheduled_for"])
            extra |= {"attempt": outcome.attempt, "lateness_ms": lateness, "duration_ms": _ms(outcome.duration)}
        if outcome.detail:
            extra["detail"] = _clip(outcome.detail)
        if outcome.error:
            extra["error"] = _clip(outcome.error)
        self.events.emit(f"run.{outcome.status}", level=level, **fields, **extra)
        return outcome

    def _notify_finished(self, job: Job, outcome: Outcome, info: RunInfo, tail: deque[str]) -> None:
        """Pings and alerts once the run is over (after its last retry)."""
        with self._lock:
            previous = self._last_final.get(job.id)
            self._last_final[job.id] = outcome.status
        if previous is None and self.ledger is not None and job.on_recovery:
            previous = self._previous_final(job.id, info.run_id)
        final = replace(
            info, status=outcome.status, attempt=outcome.attempt, error=outcome.error, detail=outcome.detail,
            duration_ms=_ms(outcome.duration), output="\n".join(tail),
        )  # fmt: skip
        self.notifier.run_finished(job, final, previous_failed=previous in ("failed", "timeout"))

    def _previous_final(self, job_id: str, run_id: str) -> str | None:
        """The status of the job's run before this one, from the ledger (for on_recovery after a restart)."""
        assert self.ledger is not None
        try:
            for run in self.ledger.history(job_id, limit=10):
                if run.run_id != run_id and run.status in ("ok", "failed", "timeout"):
                    return run.status
        except Exception:
            return None
        return None

    def _output_logger(self, fields: dict[str, Any], tail: deque[str]) -> Any:
        def output(stream: str, line: str) -> None:
            tail.append(line)
            self.events.emit("run.output", job=fields["job"], run_id=fields["run_id"], stream=stream, line=line)

        return output

    # ---- the ledger --------------------------------------------------------------------------

    def _claim(self, job: Job, slot: datetime, run_id: str, reason: str, fields: dict[str, Any]) -> bool | None:
        """Claim the slot; while the database is unreachable, retry with backoff until the slot's grace ends.

        True: ours to run. False: another claim won (never run it). None: gave up (recorded missed when possible).
        """
        assert self.ledger is not None
        delay = 0.5
        while True:
            try:
                if self.ledger.claim(run_id, job.id, slot, self.clock_id, reason):
                    return True
                self.events.emit("run.duplicate", **fields, note="already claimed; not run here")
                return False
            except Exception as exc:
                late = _now() > slot + job.misfire_grace
                if late or self.stopping.is_set():
                    error = f"database unreachable until past misfire_grace={format_duration(job.misfire_grace)}"
                    self.events.emit("run.missed", level="error", **fields, status="missed", error=error)
                    self._record_later(job, slot, error)
                    return None
                self.events.emit(
                    "ledger.unreachable", level="warning", **fields, retry_in_s=delay, error=short_error(exc)
                )
                if self.stopping.wait(delay):
                    return None
                delay = min(delay * 2, 10.0)

    def _release(self, fields: dict[str, Any]) -> Outcome:
        """Stopping before a claimed run started: give the slot back, so the next leader runs it."""
        if self.ledger is not None:
            try:
                if self.ledger.unclaim(fields["run_id"]):
                    self.events.emit("run.released", **fields, note="the clock stopped before it started")
                    return Outcome("released")
            except Exception as exc:
                self.events.emit("ledger.error", level="warning", operation="unclaim", error=short_error(exc), **fields)
        return self._report(Outcome("interrupted", error="the clock stopped before the run started"), fields, None)

    def _record_later(self, job: Job, slot: datetime, error: str) -> None:
        """Write a ``missed`` row once the database is back (a bounded number of tries, off every hot path)."""
        ledger = self.ledger
        assert ledger is not None

        def record() -> None:
            delay = 1.0
            for _ in range(30):
                try:
                    ledger.record(job.id, slot, "missed", self.clock_id, error)
                    return
                except Exception:
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)

        threading.Thread(target=record, name=f"record-{job.id}", daemon=True).start()


def _raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Ask CPython to raise ``exc_type`` in thread ``ident`` at its next bytecode (not inside a C call)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
