"""Who runs the slots: the lease loop of one clock, in a thread of its own.

A standby polls the lease every second. On becoming leader a clock catches up
on what passed with no leader (``catch_up``, planned by schedule/catchup.py),
and from then on the dispatcher claims each due slot. The leader checks its
lease every few seconds; if it is lost (database gone, connection killed) the
clock stops claiming at once. Each round it also applies pauses and "run now"
requests and does its housekeeping (daemon/housekeeping.py). No database round
trip happens on the scheduler's thread.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dynoclock.config.loader import Schedule
from dynoclock.daemon.apijobs import ApiJobs
from dynoclock.daemon.housekeeping import Housekeeping
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.run.claims import LEAD
from dynoclock.run.runner import Runner
from dynoclock.schedule import catchup
from dynoclock.state.controls import Controls
from dynoclock.state.lease import PostgresLease, make_lease
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import LeaseLost, SchemaTooNew
from dynoclock.state.schema import SchemaDenied
from dynoclock.timesource import SYSTEM, Clock

STANDBY_POLL = 1.0  # seconds between a standby's tries for the lease
LEADER_CHECK = 5.0  # seconds between the leader's lease checks and heartbeats
PROMPT_TRIES = 3  # rounds tried within STANDBY_POLL for a catch-up owed, before the backoff applies
RENEW_MARGIN = 2.0  # seconds before the lease could expire in the database that the leader stops claiming
# The GIL's switch interval while the first round waits on the database beside the caller's own work: with
# CPython's 5 ms, each answer waited up to 5 ms for the busy thread to let go (a takeover makes dozens of trips).
SHARED_SWITCH = 0.0005


class Leadership:
    def __init__(
        self, schedule: Schedule, ledger: Ledger, runner: Runner, events: EventLog, clock_id: str, clock: Clock = SYSTEM
    ):
        self.schedule = schedule
        self.ledger = ledger
        self.runner = runner
        self.events = events
        self.clock_id = clock_id
        self.clock = clock
        self.lease = make_lease(ledger, clock_id)
        if runner.claims is not None:
            runner.claims.fence = self.lease.fence  # claims commit only while this clock holds the lease
        self.controls = Controls(ledger)
        self.housekeeping = Housekeeping(schedule, ledger, runner, events, clock)
        self.leader = threading.Event()
        self.stopped = self.housekeeping.stopped  # set at SIGTERM: no more rounds, no more prune batches
        self.started_at = clock.now()
        self._ready = False  # schema exists
        self.denied: SchemaDenied | None = None  # the role may not make or use the clock's schema
        self._said_standby = False
        self._failures = 0
        self._checkpoint_failed = False
        self._held_until = float("-inf")  # monotonic: until when the lease is surely ours
        self._said_expired = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the lease's connection is used by the loop and by step_down
        self.api: ApiJobs | None = None  # the app's jobs (daemon/apijobs.py), synced at each takeover
        self._due: _Due | None = None  # the catch-up owed since the last takeover, until it is done

    def is_leader(self) -> bool:
        """Leading, and the lease renewed recently enough that the database cannot have expired it: a renewal that
        hangs (a half-open connection) stops this clock claiming before a standby may take over."""
        if not self.leader.is_set():
            return False
        if self.clock.monotonic() < self._held_until:
            return True
        if not self._said_expired:
            self._said_expired = True
            self.events.emit("clock.lease_lost", level="error", clock=self.clock_id,
                             note=f"the lease was not renewed within {self.lease.ttl}s: stopped claiming")  # fmt: skip
        return False

    def _renewed(self, asked_at: float) -> None:
        ttl = self.lease.ttl
        self._held_until = float("inf") if ttl is None else asked_at + ttl - RENEW_MARGIN
        self._said_expired = False

    def start(self, now: datetime | None = None, meanwhile: Callable[[], None] | None = None) -> None:
        """One step at once (so a lone clock leads before its first slot), then the loop in a thread; raises
        ``SchemaDenied`` if the role may not make or use the clock's schema.

        ``now`` bounds the first catch-up; the scheduler takes the slots after it. ``meanwhile``: the caller's own
        work (the scheduler's first fire times), done on this thread while the first step runs on another: that
        step mostly waits on the database (a takeover publishes schedule.yaml's rows and reads the catch-up's),
        and on Postgres the server does its part on another core.
        """
        if meanwhile is None:
            self.step(now)
        else:
            first = threading.Thread(target=self.step, args=(now,), name="takeover", daemon=True)
            interval = sys.getswitchinterval()
            sys.setswitchinterval(SHARED_SWITCH)
            first.start()
            try:
                meanwhile()
            finally:
                first.join()
                sys.setswitchinterval(interval)
        if self.denied is not None:
            raise self.denied
        self._thread = threading.Thread(target=self._loop, name="leadership", daemon=True)
        self._thread.start()
        if self.lease.ttl is not None:
            threading.Thread(target=self._watch, name="lease-watch", daemon=True).start()

    def step_down(self) -> None:
        """At SIGTERM: stop claiming and release the lease now, so a standby takes over while our runs finish."""
        self.stopped.set()
        was_leader = self.leader.is_set()
        self.leader.clear()
        with self._lock:
            self.lease.release()
        if was_leader:
            self.events.emit("clock.lease_released", clock=self.clock_id)
        with contextlib.suppress(Exception):
            self.ledger.heartbeat(self.clock_id, "stopping", self.started_at)

    def refresh_controls(self) -> None:
        """Pauses and "run now" requests now (the app's change woke the api-jobs thread), not at the next round."""
        self._controls(set(self.controls.paused()), requested=True)

    def forget(self) -> None:
        """At exit: remove this clock from the clocks table."""
        with contextlib.suppress(Exception):
            self.ledger.forget_clock(self.clock_id)

    def _loop(self) -> None:
        """The rounds, one after the other. One that hangs (a database gone silent, its packets dropped) holds
        only this thread: ``_watch`` sees the lease's bound pass."""
        while not self.stopped.is_set():
            if self.clock.wait(self.stopped, self._next_wait()):
                return
            self.step()
            if self.leader.is_set() and not self.stopped.is_set():
                self._checkpoint()

    def _checkpoint(self) -> None:
        """SQLite: the WAL checkpointed after the round (state/checkpoint.py), outside the round's lock, so that a
        slow disk delays neither a stop nor the next round's claims. A failure is said once until one succeeds."""
        try:
            self.ledger.checkpoint()
        except Exception as exc:
            if not self._checkpoint_failed:
                self._checkpoint_failed = True
                self.events.emit("ledger.checkpoint_failed", level="warning", clock=self.clock_id,
                                 error=short_error(exc))  # fmt: skip
            return
        self._checkpoint_failed = False

    def _next_wait(self) -> float:
        """Seconds until the next round: backing off while rounds fail, but a catch-up still owed by a leader (its
        round failed after the lease was renewed: the database answered) is tried again within STANDBY_POLL,
        ``PROMPT_TRIES`` times, since slots wait on it (a pooled connection killed before an outage ended used to
        hold them for the backoff, up to 15 s)."""
        due = self._due
        if self.leader.is_set() and due is not None and due.prompt_tries < PROMPT_TRIES:
            due.prompt_tries += 1
            return STANDBY_POLL
        if self._failures:
            return min(STANDBY_POLL * 2.0**self._failures, 15.0)
        return LEADER_CHECK if self.leader.is_set() else STANDBY_POLL

    def _watch(self) -> None:
        """A lease that expires (Postgres): wakes when the last renewal's bound passes, so that a clock whose round
        hangs says so (``is_leader`` logs clock.lease_lost once; claims stop as they ask it) before a standby may
        take over. A round that renews in time moves the bound on: it wakes about once per two rounds."""
        while True:
            wait = LEADER_CHECK
            if self.leader.is_set():
                left = self._held_until - self.clock.monotonic()
                if left <= 0:
                    self.is_leader()
                else:
                    wait = min(left + 0.01, 60.0)
            if self.clock.wait(self.stopped, wait):
                return

    def step(self, now: datetime | None = None) -> None:
        """One round: ensure the schema, heartbeat, take or check the lease, housekeeping."""
        with self._lock:
            self._step(now)

    def _step(self, now: datetime | None) -> None:
        try:
            if not self._ready:
                migrated = self.ledger.ensure_schema()
                self._ready = True
                if migrated is not None:
                    source = {"from": migrated.source}  # a keyword of Python's: passed in a dict
                    self.events.emit("state.migrated", **source, to=migrated.target, tables=migrated.tables)
            if self.stopped.is_set():
                return
            asked_at = self.clock.monotonic()
            if self.leader.is_set():
                # On Postgres the lease is renewed by the round's own statement (one round trip, state/round.py),
                # unless a catch-up is owed first; a round that is not renewed writes nothing.
                beat: tuple[set[str], bool, bool] | None = None
                if isinstance(self.lease, PostgresLease) and self._due is None:
                    beat = self._beat()
                    held = beat is not None
                else:
                    held = self.lease.still_held()
                if not held:
                    self.leader.clear()
                    self.events.emit("clock.lease_lost", level="error", clock=self.clock_id,
                                     note="stopped claiming; will try to lead again")  # fmt: skip
                else:
                    self._renewed(asked_at)
                    if self._due is not None:  # the takeover's round failed before its catch-up was done
                        self._catch_up_due()
                    beat = beat or self._beat()
                    if beat is None:
                        raise LeaseLost("the lease was taken over during the catch-up")
                    paused_jobs, requested, others = beat
                    self._controls(paused_jobs, requested)
                    self.housekeeping.round(others_unfinished=others)
                    self._healthy()
                    return
            elif self.lease.try_acquire():
                if self.stopped.is_set():
                    self.lease.release()
                    return
                # Until when the previous leader led: read before our own heartbeat moves the mark, and before
                # this clock claims anything (if it cannot be read, this round leads nothing).
                led_until = self.ledger.led_until()
                self._renewed(asked_at)
                self.runner.takeovers += 1  # before the catch-up reads the ledger (run/backlog.py's hand-over)
                self.leader.set()
                self._said_standby = False
                # From here the dispatcher claims what comes due, and the catch-up owes the slots that passed
                # before: owed until it is done, so that a round failing on the way leaves it to the next one
                # rather than a clock that leads with a gap nobody looks at (the dispatcher dropped those slots).
                # A catch-up still owed from a takeover before keeps its earlier mark (our heartbeats moved it).
                if self._due is not None and self._due.led_until is not None and led_until is not None:
                    led_until = min(self._due.led_until, led_until)
                elif self._due is not None:
                    led_until = self._due.led_until  # None: no clock had led before that takeover
                # The slots it owes: up to the instant the scheduler starts from (at start, ``now`` given), or LEAD
                # ahead, since a running scheduler fires each slot LEAD ahead and a standby drops what it fires.
                # Later ones are the dispatcher's, even if the catch-up is done on a later round.
                self._due = _Due(led_until, now or self.clock.now() + LEAD)
                self.events.emit("clock.leader", clock=self.clock_id, state=self.ledger.location)
                # Mark at once that a clock leads (led_until), even if a SIGTERM ends this round early: the rounds'
                # own statement, made and run once here, at start, rather than in the first idle round.
                beat = self._beat()
                if beat is None:
                    raise LeaseLost("the lease was taken over as this clock took it")
                self._controls(beat[0], requested=True)
                self._catch_up_due()
                self.housekeeping.round()
            elif not self._said_standby:
                self._said_standby = True
                self.events.emit(
                    "clock.standby", clock=self.clock_id, note="another clock leads; taking over if it stops"
                )
            self.ledger.heartbeat(self.clock_id, "leader" if self.leader.is_set() else "standby", self.started_at)
            self._healthy()
        except Exception as exc:
            self._failures = min(self._failures + 1, 4)
            if self.leader.is_set() and not self.lease.still_held():
                self.leader.clear()
                self.events.emit("clock.lease_lost", level="error", clock=self.clock_id, note="database unreachable")
            if isinstance(exc, SchemaDenied):  # a setup to fix: at start the clock exits (run_clock), later it waits
                if self.denied is None:
                    self.events.emit("state.denied", level="error", clock=self.clock_id, error=str(exc))
                self.denied = exc
                return
            if isinstance(exc, SchemaTooNew):  # not a network blip: say what is wrong (an older clock after a deploy)
                self.events.emit("ledger.schema_too_new", level="error", clock=self.clock_id, error=str(exc),
                                 note="this clock stands by until it is upgraded")  # fmt: skip
                return
            self.events.emit("ledger.unreachable", level="warning", clock=self.clock_id, error=short_error(exc))

    def _beat(self) -> tuple[set[str], bool, bool] | None:
        """The leader's heartbeat, and (paused jobs, a request waits, another clock has a run unfinished): on
        Postgres with the lease renewed by the same statement (None: it was not, and nothing was written)."""
        if isinstance(self.lease, PostgresLease):
            return self.ledger.leader_round_renewing(self.clock_id, self.started_at, self.lease)
        return self.ledger.leader_round(self.clock_id, self.started_at)

    def _healthy(self) -> None:
        if self._failures:
            self.events.emit("ledger.reachable", clock=self.clock_id)
        self._failures = 0

    def _controls(self, paused_jobs: set[str], requested: bool) -> None:
        """Pauses and "run now" requests from the status page (read each round, a few seconds apart)."""
        self.runner.paused = paused_jobs
        if not requested:
            return
        runnable = {job.id for job in list(self.schedule.jobs.values()) if job.action is not None}
        for request_id, job_id, requested_at in self.controls.take_requests(self.clock_id, runnable):
            self.events.emit("request.taken", job=job_id, request_id=request_id)
            self.runner.submit(job_id, requested_at, reason="manual")

    def _catch_up_due(self) -> None:
        """The catch-up owed since this clock took the lease; jobs done by an earlier try that failed on a later
        job are not planned again."""
        due = self._due
        assert due is not None
        if self.api is not None:  # before the catch-up, which covers the app's recurring jobs too
            self.api.lead_sync()
        self.catch_up(due.until, due.led_until, due.done)
        self._due = None

    def catch_up(self, now: datetime, led_until: datetime | None, done: set[str] | None = None) -> None:
        """Slots with no row: within misfire_grace they run, the rest are recorded (planned by schedule/catchup.py).

        Gaps are looked for from the last leader's heartbeat less the grace: a slot that a stopping leader handed
        over within its grace and that no clock took in time lies there, between rows. ``done``: jobs to leave
        out, to which each job is added once its plan is written and its runs queued."""
        writer = self.runner.writer
        assert writer is not None
        margin = timedelta(seconds=LEADER_CHECK)
        done = set() if done is None else done
        todo = [
            job for job in list(self.schedule.jobs.values())
            if job.enabled and job.action is not None and job.id not in done
            and not (job.origin == "api" and job.trigger_key == "at")  # the app's one-offs: daemon/apijobs.py
        ]  # fmt: skip
        since: dict[str, datetime] = {}
        for job in todo:
            since[job.id] = now - job.misfire_grace
            if led_until is not None:
                since[job.id] = min(since[job.id], led_until - job.misfire_grace - margin)
        read = self.ledger.catch_up_slots_of(since, now)
        for job in todo:
            created = self.api.created.get(job.id) if self.api is not None else None
            after, taken = read[job.id]
            if after is None and led_until is not None:
                # No row before (a new job, an `at:` job, rows pruned): a leader would have claimed its slots
                # while it led, so only those after the last leader's heartbeat can have been missed. The
                # margin covers a slot fired just before that heartbeat and not yet claimed.
                after = min([led_until - margin, *taken[:1]])
            if created is not None and (after is None or after < created):
                after = created  # an app's job has no slot before it was added
            plan = catchup.plan(job, after, taken, now)
            if plan.missed is not None:
                writer.not_run(job.id, plan.missed.last, "missed", plan.missed.error(job.misfire_grace))
            for slot in plan.skipped:
                writer.not_run(job.id, slot, "skipped", "catch_up=one: coalesced into a later run")
            if plan.missed or plan.skipped or plan.run:
                self.events.emit("clock.catch_up", job=job.id, run=len(plan.run), skipped=len(plan.skipped),
                                 missed=plan.missed.count if plan.missed else 0, since=after)  # fmt: skip
            if plan.run:
                self.runner.submit_in_order(job.id, plan.run, reason="catch_up")
            done.add(job.id)


@dataclass
class _Due:
    """A takeover's catch-up not done yet: the last leader's mark it starts from, the instant it plans up to (as
    its ``now``), and the jobs already done."""

    led_until: datetime | None
    until: datetime
    done: set[str] = field(default_factory=set)
    prompt_tries: int = 0  # rounds tried again at once for it (Leadership._next_wait)
