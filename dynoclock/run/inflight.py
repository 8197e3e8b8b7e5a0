"""The runs one clock has in hand, under one lock: how many are pending, which claimed ones wait for their start,
which attempts are running per job, and the outcomes the watchdog wrote for runs it gave up on.

``Runner`` (run/runner.py) keeps one; ``Backlog`` (run/backlog.py) waits on it for a job's other runs to end.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from dynoclock.actions.base import RunContext
from dynoclock.run.outcome import Outcome, RunFields
from dynoclock.timesource import Clock


class InFlight:
    def __init__(self, clock: Clock):
        self.clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified as runs end, if anyone waits (_watchers)
        self._watchers = 0
        self._active: dict[str, list[RunContext]] = {}  # job id -> its running attempts
        self._pending = 0  # runs submitted and not yet over (waiting, queued or running)
        self._released = 0  # of _pending: runs given back at shutdown whose timer entries have not fired yet
        self._waiting: dict[str, RunFields] = {}  # claimed runs waiting for their start: run id -> fields
        self._abandoned: dict[str, Future[Outcome]] = {}  # run id -> its outcome once the watchdog wrote it off

    # ---- pending runs ---------------------------------------------------------------------

    def pending(self) -> None:
        """A run was submitted: it counts until ``done``."""
        with self._lock:
            self._pending += 1

    def done(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._watchers:  # most runs end with nobody waiting: no Condition call on every run's path
                self._changed.notify_all()

    def count(self) -> int:
        """Runs submitted and not over (waiting for their start, queued or running)."""
        with self._lock:
            return self._pending - self._released

    def wait_idle(self, until: float) -> None:
        """Wait until no run is pending (those given back excepted), or the clock's monotonic ``until``."""
        with self._lock:
            self._watchers += 1
            try:
                while self._pending > self._released and self.clock.monotonic() < until:
                    self._changed.wait(min(0.1, max(0.0, until - self.clock.monotonic())))
            finally:
                self._watchers -= 1

    # ---- claimed runs waiting for their start ---------------------------------------------

    def wait_for_start(self, fields: RunFields) -> None:
        """A claimed run waits in the timer's heap for its start; ``release_waiting`` may give it back meanwhile."""
        with self._lock:
            self._waiting[fields["run_id"]] = fields

    def start(self, run_id: str) -> bool:
        """Its start time came: True to run it; False if it was given back at shutdown while it waited."""
        with self._lock:
            if self._waiting.pop(run_id, None) is not None:
                return True
            self._released -= 1
            return False

    def release_waiting(self) -> list[RunFields]:
        """At shutdown: every claimed run still waiting, taken out (their timer entries still fire, and end at once)."""
        with self._lock:
            waiting = list(self._waiting.values())
            self._waiting.clear()
            self._released += len(waiting)
        return waiting

    # ---- running attempts -----------------------------------------------------------------

    def running(self, job_id: str | None = None) -> list[RunContext]:
        """The attempts running now: of one job, or of all."""
        with self._lock:
            if job_id is not None:
                return list(self._active.get(job_id, []))
            return [ctx for contexts in self._active.values() for ctx in contexts]

    def add(self, ctx: RunContext) -> None:
        with self._lock:
            self._active.setdefault(ctx.job, []).append(ctx)

    def forget(self, ctx: RunContext) -> None:
        with self._lock:
            contexts = self._active.get(ctx.job, [])
            if ctx in contexts:
                contexts.remove(ctx)
            if not contexts:
                self._active.pop(ctx.job, None)

    def wait_for_job(self, job_id: str, stopping: threading.Event) -> None:
        """Until no attempt of ``job_id`` runs (or the clock stops)."""
        with self._lock:
            self._watchers += 1
            try:
                while self._active.get(job_id) and not stopping.is_set():
                    self._changed.wait(0.1)  # woken as runs end; the timeout covers one that ends without a wake-up
            finally:
                self._watchers -= 1

    # ---- attempts the watchdog wrote off ---------------------------------------------------

    def expect(self, run_id: str) -> Future[Outcome]:
        """``run JOB``: the future its outcome is set on, by the run or by the watchdog writing it off."""
        done: Future[Outcome] = Future()
        with self._lock:
            self._abandoned[run_id] = done
        return done

    def written_off(self, run_id: str, outcome: Outcome) -> None:
        """The watchdog gave up on the run and recorded ``outcome`` for it."""
        with self._lock:
            done = self._abandoned.setdefault(run_id, Future())
            if not done.done():
                done.set_result(outcome)

    def settled(self, run_id: str) -> Outcome | None:
        """What the watchdog recorded for a run it wrote off (None: nothing yet); forgotten once read."""
        with self._lock:
            done = self._abandoned.pop(run_id, None)
        return done.result() if done is not None and done.done() else None

    def ended(self, run_id: str, done: Future[Outcome], outcome: Outcome) -> None:
        """``run JOB``'s run returned ``outcome``: set it on ``done`` (from ``expect``) unless the watchdog did."""
        with self._lock:
            self._abandoned.pop(run_id, None)
            if not done.done():
                done.set_result(outcome)
