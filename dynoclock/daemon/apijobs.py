"""The leader's side of runtime jobs: the app's changes applied within a second, without a restart.

On taking the lead (``lead_sync``, before the catch-up) the clock publishes its schedule.yaml ids, loads every
recurring api job into the scheduler and the runner's registry, and holds the one-offs due within ``WINDOW``
(overdue ones too: within ``misfire_grace`` they run late, else they are recorded ``missed``). Then a thread
(``api-jobs``) wakes on Postgres ``NOTIFY`` (a ``listen`` thread; behind PgBouncer in transaction pooling it
hears nothing), on SQLite when the WAL file changes (state/walwatch.py: while its events keep coming, the leader's
own heartbeat among them, nothing else wakes the loop), or every ``POLL`` seconds, reads the change counter
(state/changes.py), and applies the rows changed since (state/jobstore.py). On Postgres the poll runs every
``POLL_PG`` seconds until the ``listen`` thread has heard a probe this clock sent on the channel from another
session (proof that NOTIFY reaches it), then every ``POLL_HEARD`` seconds, each of those polls sending a new
probe; a probe not heard back by the next poll, a reconnect or an error, and the poll is back to ``POLL_PG``.
On SQLite a read woken by the WAL on a quiet database is *settled* (state/changes.py): it waits for the writer
whose frames woke it, so it needs no second look. Every ``SLIDE``
seconds the window moves on: one-offs are read from the index on next_fire_at, a window at a time, never all of
them, and not at all while the first pending one lies beyond the window and nothing changed. A run's claim commits
only while the job's row still has the version the run was planned under (state/ledger.py ``claim_many``): a
removed or changed job starts no run planned before.
"""

from __future__ import annotations

import select
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from dynoclock.client import job_of
from dynoclock.config.credentials import schedule_secrets
from dynoclock.config.durations import format_duration
from dynoclock.config.loader import Job, Schedule
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.observe.redact import redact
from dynoclock.observe.timefmt import iso_utc
from dynoclock.run.claims import LEAD
from dynoclock.run.runner import Runner
from dynoclock.schedule.triggers import trigger_keys
from dynoclock.state.engines import postgres_connect_args
from dynoclock.state.jobstore import CHANNEL, JobRow, JobStore, schema_of
from dynoclock.state.ledger import Ledger
from dynoclock.state.publish import Specs, publish_schedule
from dynoclock.state.walwatch import WalWatch, watch_wal
from dynoclock.timesource import SYSTEM, Clock

WINDOW = timedelta(seconds=60)  # one-offs due this far ahead are held in memory
SLIDE = 30.0  # seconds between moves of the window (so a one-off is read at least 30 s before it is due)
POLL = 0.5  # seconds between reads of the change counter on SQLite
POLL_PG = 1.0  # on Postgres, where NOTIFY wakes the loop at once (behind PgBouncer, this poll is what applies)
WAL_TRUSTED = 12.0  # SQLite: seconds the WAL watch is relied on after its last event (the leader writes every 5 s)
WAL_GAP = 0.25  # SQLite: seconds at least between two reads when the WAL's changes wake the loop
POLL_HEARD = 15.0  # on Postgres once the last probe came back on the LISTEN session: NOTIFY is what applies
FINISH_EVERY = 300.0  # seconds between looks for one-offs over when none was held since the last look


class Slots(Protocol):
    """The scheduler's side (daemon/process.py): a job's slots from ``since`` on, or none."""

    def put(self, job: Job, since: datetime) -> None: ...

    def drop(self, job_id: str) -> None: ...


class ApiJobs:
    def __init__(
        self, ledger: Ledger, runner: Runner, slots: Slots, due: Callable[[str, datetime, int | None], None],
        events: EventLog, leading: Callable[[], bool], controls: Callable[[], None], clock: Clock = SYSTEM,
    ):  # fmt: skip
        self.store = JobStore(ledger)
        self.ledger = ledger
        self.runner = runner
        self.slots = slots
        self.due = due  # the dispatcher's: claims the slot under the job's version
        self.events = events
        self.leading = leading
        self.controls = controls  # re-reads pauses and "run now" requests
        self.clock = clock
        self.recurring: dict[str, Job] = {}  # api jobs in the scheduler
        self.created: dict[str, datetime] = {}  # their creation: a takeover's catch-up starts no earlier
        self.window: dict[str, tuple[int, datetime]] = {}  # one-offs held: id -> (version, slot)
        self.horizon: datetime | None = None  # None: not synced since this clock took the lead
        self.seen = 0
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._next_slide = 0.0
        self._failures = 0
        self.counter = self.store.counter()
        self._probe: str | None = None  # the probe sent last, until the listen thread hears it
        self._heard = False  # the last probe came back: LISTEN works
        self._trusted = False  # the probe before the last one had come back when the last one was sent
        self._next_probe = float("inf")  # when the next poll sends a probe (set when LISTEN is on)
        self._quiet: tuple[int, datetime | None] | None = None  # (seen, first pending one-off after the window)
        self._finish_at = 0.0  # monotonic: when one-offs over are looked for next
        self._wal: WalWatch | None = None  # SQLite: the kernel's word that the WAL changed (state/walwatch.py)
        self._stirred = self._checked = float("-inf")  # monotonic: the WAL's last event; the last read
        self._recheck = float("inf")  # monotonic: a read due after a WAL event, whatever comes meanwhile
        self._settle = False  # the WAL moved and was quiet before: the next read is a settled one
        self._held_at = float("-inf")  # monotonic: when a one-off was last held (it ends within about two slides)

    def start(self) -> None:
        threading.Thread(target=self._loop, name="api-jobs", daemon=True).start()
        if self.ledger.is_postgres:
            threading.Thread(target=self._listen, name="listen", daemon=True).start()

    # ---- taking the lead -----------------------------------------------------------------

    def lead_sync(self) -> None:
        """At a takeover (leadership thread; the loop tries again if it failed): publish schedule.yaml's ids, load
        every api job anew."""
        with self._lock:
            self.publish(self.runner.schedule)
            now = self.clock.now()
            self.seen = self.store.seq()  # changes after this are read by the loop
            rows = {row.id: row for row in self.store.recurring("api")}  # not the schedule.yaml ones just published
            for job_id in list(self.recurring):
                if job_id not in rows:
                    self._drop(job_id)
            for row in rows.values():
                self._recurring(row, now + LEAD, now, takeover=True)
            self.window.clear()
            self.horizon = now + WINDOW
            for row in self.store.one_offs(None, self.horizon):
                self._hold(row, now)
            # The first pending one-off after the window: the slides read nothing before it comes near. One-offs
            # that ended under an earlier leader leave the job list at the first look (FINISH_EVERY at most).
            self._quiet = (self.seen, self.store.next_one_off(self.horizon))
            self._finish_at = self.clock.monotonic() + FINISH_EVERY
            self._next_slide = self.clock.monotonic() + SLIDE

    def publish(self, schedule: Schedule) -> None:
        """The schedule's job ids (and triggers, for listings) as rows of origin ``schedule``: the app may not
        take these ids."""
        mine = {job.id: job for job in list(schedule.jobs.values()) if job.origin == "schedule"}
        shadowed = publish_schedule(self.store, Specs(mine, trigger_keys))
        for job_id in shadowed:
            self.recurring.pop(job_id, None)
            self.window.pop(job_id, None)
            note = "schedule.yaml has a job with this id: it replaces the one added from the app"
            self.events.emit("clock.api_job_shadowed", level="warning", job=job_id, note=note)

    # ---- the loop ------------------------------------------------------------------------

    def _poll(self) -> float:
        """Seconds until the next read if nothing wakes the loop before."""
        base = POLL_PG if self.ledger.is_postgres else POLL
        if self._failures:  # the database failed: backoff to 16 times the poll, whatever woke the loop lately
            return base * 2.0 ** min(self._failures, 4)
        if self.ledger.is_postgres:
            return POLL_HEARD if self._trusted else POLL_PG
        if self._wal is not None:  # the WAL moved lately: its next change wakes the loop
            now = self.clock.monotonic()
            return min(max(POLL, self._stirred + WAL_TRUSTED - now), max(0.0, self._recheck - now))
        return POLL

    def _wait(self) -> None:
        timeout = self._poll()
        if self._wal is None:
            self.clock.wait(self.wake, timeout)
            self.wake.clear()
            return
        self._recheck, self._settle = float("inf"), False
        if select.select([self._wal], [], [], timeout)[0]:
            if self._wal.drain():
                # A commit's frames are written before it is visible (the WAL index, in shared memory, says
                # nothing): the read waits for the writer's lock (a settled read, state/changes.py), or, if that
                # lock is held on to or the WAL is busy (where it would hold up the clock's own writes), it is
                # made again WAL_GAP later, in case it came too early.
                self._stirred, self._settle = self.clock.monotonic(), True
                self._recheck = self._stirred + WAL_GAP
            else:  # the WAL file went (the database was replaced): polled from now on
                self._wal.close()
                self._wal = None
            pause = self._checked + WAL_GAP - self.clock.monotonic()
            if pause > 0:  # a busy WAL: 4 reads a second
                self.clock.sleep(pause)
                self._recheck, self._settle = self.clock.monotonic() + WAL_GAP, False

    def _drain(self) -> None:
        """The WAL's events so far, dropped: under the write lock, they are of commits the read will see."""
        if self._wal is not None:
            self._wal.drain()

    def _loop(self) -> None:
        if not self.ledger.is_postgres:
            self._wal = watch_wal(self.ledger.sqlite_path)
        while not self.stopped.is_set():
            self._wait()
            self._checked = self.clock.monotonic()
            if self.stopped.is_set():
                return
            if not self.leading():
                self.horizon = None  # synced anew at the next takeover
                continue
            try:
                if self.horizon is None:
                    self.lead_sync()
                with self._lock:
                    value = self.counter.read_settled(self._drain) if self._settle else None
                    if value is None:
                        value = self.counter.read(self._probing())
                    else:
                        self._recheck = float("inf")  # settled: no second read
                    if value != self.seen:
                        self.apply_changes()
                    if self.clock.monotonic() >= self._next_slide:
                        self.slide()
                if self._failures:
                    self._failures = 0
                    self.events.emit("ledger.reachable", note="runtime jobs")
            except Exception as exc:  # the database is away: the next round tries again; nothing is lost
                self._heard = self._trusted = False
                self._next_probe = min(self._next_probe, self.clock.monotonic())
                self._failures += 1
                if self._failures == 1:
                    self.events.emit("api_jobs.error", level="warning", error=short_error(exc))

    def _probing(self) -> str | None:
        """Postgres: the probe this poll sends, when one is due (the last is then no longer counted as heard)."""
        now = self.clock.monotonic()
        if now < self._next_probe:
            return None
        # Whether the last probe came back is asked as the next is sent (a poll later), not a second after it:
        # a second read for each probe was a third of an idle clock's reads. A probe lost, and polls are back to
        # POLL_PG from this one on, each with a probe, until one comes back.
        self._trusted = self._heard
        self._heard, self._next_probe = False, now + (POLL_HEARD if self._trusted else POLL_PG)
        self._probe = f"probe:{uuid.uuid4().hex}"
        return self._probe

    def _listen(self) -> None:
        """Postgres: LISTEN on its own session; a notification of this schema wakes the loop at once."""
        import psycopg
        from psycopg.conninfo import make_conninfo

        url = self.ledger.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        # Bounded as every connection of the clock's: a session that died without a reset errs within seconds.
        bounds: dict[str, Any] = {k: v for k, v in postgres_connect_args("listen").items() if k != "prepare_threshold"}
        conninfo = make_conninfo(conninfo, **bounds)
        while not self.stopped.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    schema = (schema_of(self.ledger),) if schema_of(self.ledger) else None
                    schema = schema or conn.execute("SELECT current_schema()").fetchone()
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._next_probe = self.clock.monotonic()  # the next poll asks whether it hears
                    while not self.stopped.is_set():
                        # Wait on the socket itself: psycopg's own notifies(timeout=) wakes ten times a second,
                        # most of an idle clock's CPU. A dead connection reads as ready, and notifies() raises.
                        ready, _, _ = select.select([conn.fileno()], [], [], 30.0)
                        if not ready:
                            continue
                        for note in conn.notifies(timeout=0.0, stop_after=1000):
                            if schema is None or note.payload == schema[0]:
                                self.wake.set()
                            elif self._probe is not None and note.payload == self._probe:
                                self._heard = True  # from the next poll on, the loop relies on NOTIFY
            except Exception:
                self._heard = self._trusted = False  # polled every POLL_PG until LISTEN is back
                self._next_probe = float("inf")
                self.wake.set()  # a wait of POLL_HEARD under way ends now
                self.clock.wait(self.stopped, 5.0)  # the poll goes on meanwhile

    def apply_changes(self) -> None:
        """Rows changed since ``seen``, in the order of their changes."""
        assert self.horizon is not None
        now = self.clock.now()
        seq = self.counter.read()
        rows = self.store.changed_since(self.seen, self.horizon)
        for row in rows:
            self._apply(row, now)
        self.seen = max([seq, *(row.changed_seq for row in rows)])
        self.controls()

    def _apply(self, row: JobRow, now: datetime) -> None:
        if row.origin != "api":  # a schedule row: this id is schedule.yaml's (a pause, a run-now woke us)
            if row.id in self.recurring or row.id in self.window:
                self.recurring.pop(row.id, None)
                self.window.pop(row.id, None)
            return
        if row.removed or row.kind == "at":
            if row.id in self.recurring:
                self._drop(row.id)
            if row.removed:
                if self.window.pop(row.id, None) is not None:
                    self.runner.jobs.retire(row.id)
                self.events.emit("api_jobs.removed", job=row.id, version=row.version)
                return
        if row.kind == "at":
            assert self.horizon is not None
            if row.next_fire_at is None or row.next_fire_at > self.horizon:
                if self.window.pop(row.id, None) is not None:
                    self.runner.jobs.retire(row.id)
                return
            if self.window.get(row.id) != (row.version, row.next_fire_at):
                self._hold(row, now)
            return
        self._recurring(row, None, now)

    def slide(self) -> None:
        """The next stretch of one-offs into memory; finished ones leave the job list (every slide after one was
        held, else every FINISH_EVERY). Nothing is read while the first pending one-off found by the last read
        lies beyond the new window and no change was applied since (every change raises the counter)."""
        assert self.horizon is not None
        now = self.clock.now()
        horizon = now + WINDOW
        quiet = self._quiet
        if quiet is None or quiet[0] != self.seen or (quiet[1] is not None and quiet[1] <= horizon):
            for row in self.store.one_offs(self.horizon, horizon):
                self._hold(row, now)
            self._quiet = (self.seen, self.store.next_one_off(horizon))
        self.horizon = horizon
        self._next_slide = self.clock.monotonic() + SLIDE
        mono = self.clock.monotonic()
        if mono >= self._finish_at or mono - self._held_at <= WINDOW.total_seconds() + 2 * SLIDE:
            self._finish_at = mono + FINISH_EVERY
            self.store.finish_one_offs(now - timedelta(seconds=1))
        self.runner.jobs.forget_retired()

    # ---- one job -------------------------------------------------------------------------

    def _recurring(self, row: JobRow, since: datetime | None, now: datetime, takeover: bool = False) -> None:
        """An api job's slots into the scheduler from ``since``; None: from its change (those between it and now
        run late), but not from further back than misfire_grace (a leader that could not read the change for
        long does not run a burst of stale slots)."""
        job = self._job(row)
        if job is None:
            return
        known = self.recurring.get(row.id)
        if known is not None and known.version == job.version:
            return
        if since is None:
            since = max(row.updated_at, now - job.misfire_grace)
        self.recurring[row.id] = job
        self.created[row.id] = row.created_at
        self.runner.schedule.jobs[row.id] = job
        if job.enabled and job.action is not None:
            self.slots.put(job, since)
        else:
            self.slots.drop(row.id)
        if not takeover:
            self.events.emit("api_jobs.applied", job=row.id, version=row.version,
                             change="added" if known is None else "changed", since=since)  # fmt: skip

    def _drop(self, job_id: str) -> None:
        self.recurring.pop(job_id, None)
        self.created.pop(job_id, None)
        self.slots.drop(job_id)
        self.runner.jobs.retire(job_id)

    def _hold(self, row: JobRow, now: datetime) -> None:
        """A one-off due within the window: its run at its time, or, overdue, late within its grace."""
        job = self._job(row)
        slot = row.next_fire_at
        if job is None or slot is None:
            return
        self.runner.schedule.jobs[row.id] = job
        self.window[row.id] = (row.version, slot)
        self._held_at = self.clock.monotonic()  # its run ends in the ledger: looked for at the next slides
        if not job.enabled or job.action is None:
            return
        if slot > now:
            delay = max(0.0, (slot - LEAD - now).total_seconds())
            self.runner.timer.at(self.clock.monotonic() + delay, lambda: self._fire(row.id, row.version, slot))
            return
        self.window.pop(row.id, None)
        if now - slot <= job.misfire_grace:
            self.runner.submit(row.id, slot, reason="catch_up")  # claimed by Claims.one under the job's version
        elif self.runner.writer is not None:
            error = f"not run within misfire_grace={format_duration(job.misfire_grace)}: due at {iso_utc(slot)}"
            if self.runner.writer.not_run(row.id, slot, "missed", error, reason="catch_up"):
                self.events.emit("run.missed", level="error", job=row.id, scheduled_for=slot, status="missed",
                                 error=error)  # fmt: skip
        self.runner.jobs.retire(row.id)

    def _fire(self, job_id: str, version: int, slot: datetime) -> None:
        """On the timer, LEAD before the slot: still the same job? Then claim it (the dispatcher)."""
        if self.window.get(job_id) != (version, slot):
            return  # changed or removed meanwhile
        self.window.pop(job_id, None)
        self.due(job_id, slot, version)
        self.runner.jobs.retire(job_id)

    def _job(self, row: JobRow) -> Job | None:
        job = job_of(row)
        if job is None:
            self.events.emit("api_jobs.unreadable", level="error", job=row.id, version=row.version,
                             note="its spec does not parse with this clock's version: not scheduled")  # fmt: skip
            return None
        if row.spec:
            redact.add(schedule_secrets({"jobs": {row.id: row.spec}}, {}))
        return job
