"""The clock process: an APScheduler BlockingScheduler wired to our triggers and runner, and signals.

APScheduler keeps the wait loop (sleep until the next fire time, never poll).
Our trigger hands it the job's slots, LEAD before each is due, and our
executor hands each due slot to the dispatcher (daemon/dispatch.py), which
claims it and passes the runs won to the Runner (run/runner.py), which owns
timeouts, overlap and retries (APScheduler 3 has none).

Shutdown fits Heroku: SIGTERM or SIGINT, once or many times, stops new runs at
once, lets running ones finish for ``shutdown_grace``, stops the rest, and
exits 0 before Heroku's SIGKILL at 30 s.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger

from dynoclock import signals
from dynoclock.actions.python import PythonAction
from dynoclock.config.loader import Job, Schedule
from dynoclock.daemon.apijobs import ApiJobs
from dynoclock.daemon.dispatch import Dispatcher
from dynoclock.daemon.leadership import Leadership
from dynoclock.daemon.reload import Reloader
from dynoclock.daemon.slotstore import ALIAS, SlotStore
from dynoclock.observe.logs import EventLog, log
from dynoclock.observe.redact import redact
from dynoclock.run.claims import LEAD
from dynoclock.run.isolation import POOL as processes
from dynoclock.run.runner import Runner
from dynoclock.run.watchdog import STOP_GRACE
from dynoclock.state import engines as db
from dynoclock.state.ledger import Ledger
from dynoclock.state.location import clock_id, state_url
from dynoclock.state.schema import SchemaDenied
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from apscheduler.job import Job as SchedulerJob


class SlotTrigger(BaseTrigger):  # type: ignore[misc]
    """Feeds APScheduler a job's slots (UTC) from our own triggers: cron semantics, anchored intervals."""

    __slots__ = ("job", "since")  # one per job: no attribute dict

    def __init__(self, job: Job, since: datetime):
        self.job = job
        self.since = since  # slots up to here belong to the catch-up at start

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # Fire LEAD ahead of each slot, so that its claim is done when the slot comes.
        previous_slot = previous_fire_time + LEAD if previous_fire_time else self.since
        slot = self.job.next_after(previous_slot)
        return None if slot is None else slot - LEAD

    def __str__(self) -> str:
        return self.job.describe()


class RunnerExecutor(BaseExecutor):  # type: ignore[misc]
    """Hands every due slot to the dispatcher, which claims it off the scheduler's thread: never blocks the loop."""

    def __init__(self, dispatcher: Dispatcher):
        super().__init__()
        self.dispatcher = dispatcher

    def submit_job(self, job: SchedulerJob, run_times: list[datetime]) -> None:
        version = job.trigger.job.version  # an api job's: its claim commits only while the row still has it
        for run_time in run_times:  # several when the loop itself was late: each slot runs
            self.dispatcher.due(job.id, run_time + LEAD, version)

    def _do_submit_job(self, job: SchedulerJob, run_times: list[datetime]) -> None:  # pragma: no cover - unused
        raise NotImplementedError


class SchedulerSlots:
    """Jobs into and out of the running scheduler (api jobs, a reload); APScheduler's calls are thread-safe."""

    def __init__(self, scheduler: BlockingScheduler):
        self.scheduler = scheduler

    def put(self, job: Job, since: datetime) -> None:
        self.scheduler.add_job(
            UNUSED, trigger=SlotTrigger(job, since), id=job.id, name=job.id, misfire_grace_time=None,
            coalesce=False, replace_existing=True,
        )  # fmt: skip

    def drop(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(job_id)


def run_clock(schedule: Schedule, events: EventLog = log, state: str | None = None, clock: Clock = SYSTEM) -> int:
    """Run the schedule until SIGTERM/SIGINT; returns the exit code (0 after a clean stop)."""
    redact.add_from_env()
    events.write_behind()
    me = clock_id()
    try:
        ledger = Ledger(state or state_url())
    except db.DatabaseUrlError as exc:
        print(f"clock: state database: {exc}", file=sys.stderr)
        return 2
    ledger.checkpoint_in_rounds()  # SQLite: the leader checkpoints the WAL, no run's commit does
    if os.environ.get("DYNO") and not ledger.is_postgres:
        events.emit("clock.warning", level="warning", state=ledger.location,
                    note="SQLite state on a Heroku dyno is lost at every restart and cannot keep two clocks "
                    "from running the same slot: attach Postgres (DATABASE_URL or CLOCK_DATABASE_URL)")  # fmt: skip
    leadership: Leadership | None = None
    runner = Runner(
        schedule, events, me, ledger, is_leader=lambda: leadership is not None and leadership.is_leader(), clock=clock
    )
    leadership = Leadership(schedule, ledger, runner, events, me, clock)
    since = clock.now()
    dispatcher = Dispatcher(runner.claims, runner, leading=leadership.is_leader)
    store = SlotStore()
    scheduler = BlockingScheduler(
        timezone=UTC, executors={"default": RunnerExecutor(dispatcher)}, jobstores={ALIAS: store}
    )
    slots = SchedulerSlots(scheduler)
    api = ApiJobs(ledger, runner, slots, dispatcher.due, events, leadership.is_leader, leadership.refresh_controls,
                  clock)  # fmt: skip
    leadership.api = api
    reloader = Reloader(schedule, runner, slots, api, events, leadership.leader, clock)
    jobs = [job for job in schedule.jobs.values() if job.enabled and job.action is not None]

    def load() -> None:  # the jobs' first fire times: CPU, while the first round waits on the database
        store.load(scheduler, _unused, ((job.id, SlotTrigger(job, since)) for job in jobs), since)

    def started(event: object) -> None:  # on the scheduler's thread, before its loop's first wait
        # The schedule's and the scheduler's objects live as long as the process: keep the cyclic GC from walking
        # them again and again (with 10,000 jobs, those walks were most of an idle clock's CPU). The GC was off
        # through start-up (cli/main.py cmd_run): they are frozen, then it is on again. No collection first: it
        # walked every object of the start-up (31 ms with 10,000 jobs) to find 200-420 cycles of garbage (argparse's,
        # SQLAlchemy's compiled statements: 20-45 kB), which stay frozen with the rest.
        gc.freeze()
        gc.enable()
        events.emit("clock.ready", clock=me, jobs=len(jobs), leader=leadership.is_leader())

    scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)
    stop = _Stopper(scheduler, runner, events, leadership, clock)
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    signal.signal(signal.SIGHUP, lambda signum, frame: reloader.request())
    events.emit(
        "clock.start", clock=me, jobs=len(jobs), disabled=len(schedule.jobs) - len(jobs),
        schedule=schedule.file, workers=schedule.workers, pid=os.getpid(), state=ledger.location,
    )  # fmt: skip
    for signum, at in signals.held():  # arrived while the clock was starting: it stops now, cleanly
        if signum == signal.SIGHUP:
            reloader.request()  # the file may have changed since it was read
        else:
            stop.on_signal(signum, None, at=at)
    try:
        # Leads at once if no other clock does, and catches up to `since`. On Postgres, whose server does its part
        # of the first round on another core, the jobs' first fire times are worked out meanwhile (a fresh 10,000-job
        # start: ready 50 ms sooner); on SQLite, whose work is in this process, one after the other (side by side
        # was 35 ms slower there).
        if ledger.is_postgres:
            leadership.start(now=since, meanwhile=load)
        else:
            load()
            leadership.start(now=since)
    except SchemaDenied as exc:
        print(f"state: {exc}", file=sys.stderr)
        events.flush(timeout=1.0)
        return 2
    api.start()
    isolated = [j.action for j in jobs if isinstance(j.action, PythonAction) and j.action.isolate == "process"]
    processes.prestart({(action.app or "", action.max_memory) for action in isolated})
    if stop.first_signal is None:
        scheduler.start()  # blocks until a signal shuts the scheduler down
    first = stop.first_signal or clock.monotonic()
    grace = schedule.shutdown_grace.total_seconds()
    runner.drain(deadline=first + grace)
    processes.shutdown(timeout=1.0)  # the runs are over or were stopped: no worker process is left behind
    # What is left is bounded so that the clock exits before Heroku's SIGKILL (30 s after the first
    # signal with the default grace), even if the database or a webhook does not answer: everything below ends
    # by 27.5 s, the last log lines by 28.5 s, leaving 1.5 s for the interpreter's exit on a loaded machine.
    end = first + grace + STOP_GRACE - 0.5
    if runner.writer is not None:
        runner.writer.flush(timeout=max(0.0, end - clock.monotonic() - 0.5))
    _bounded(leadership.forget, timeout=max(0.0, min(0.5, end - clock.monotonic())))
    runner.notifier.flush(timeout=max(0.0, end - clock.monotonic()))
    events.emit("clock.stop", clock=me, after_signal_s=round(clock.monotonic() - (stop.first_signal or 0), 1))
    events.flush(timeout=max(0.2, min(1.0, end + 1.0 - clock.monotonic())))
    return 0


def _bounded(task: Callable[[], None], timeout: float) -> None:
    """Run ``task`` in a daemon thread and wait at most ``timeout`` for it."""
    thread = threading.Thread(target=task, daemon=True)
    thread.start()
    thread.join(timeout)


def _unused() -> None:  # pragma: no cover - RunnerExecutor never calls the job function
    raise AssertionError("jobs run through the Runner")


# The function of the jobs added through add_job (a reload's, the app's) as a textual reference: APScheduler keeps
# the text it is given as the job's func_ref, one string for them all, where given the function it writes a new
# "module:name" text per job (0.8 MB for 10,000). schedule.yaml's jobs at start share one too (daemon/slotstore.py).
UNUSED = f"{__name__}:{_unused.__name__}"


class _Stopper:
    """Signal handler: the first signal stops the scheduler; later ones are logged and change nothing."""

    def __init__(
        self, scheduler: BlockingScheduler, runner: Runner, events: EventLog, leadership: Leadership, clock: Clock
    ):
        self.clock = clock
        self.leadership = leadership
        self.scheduler = scheduler
        self.runner = runner
        self.events = events
        self.first_signal: float | None = None

    def on_signal(self, signum: int, frame: FrameType | None, at: float | None = None) -> None:
        name = signal.Signals(signum).name
        if self.first_signal is not None:
            self.events.emit("clock.signal", signal=name, note="already stopping")
            return
        self.first_signal = self.clock.monotonic() if at is None else at
        self.runner.stopping.set()  # no new runs, no retries, from this instant
        # Hand over at once: give back the slots claimed and not started, then release the lease, so a standby
        # leads (and finds those slots free) while our running jobs finish.
        threading.Thread(target=self._hand_over, name="hand-over", daemon=True).start()
        grace = self.runner.schedule.shutdown_grace.total_seconds()
        running = self.runner.running_count()
        self.events.emit("clock.stopping", signal=name, running=running, grace_s=grace, kill_after_s=STOP_GRACE)
        # Shut the scheduler down from another thread: the handler runs inside the scheduler's
        # own loop, and shutdown() takes the locks that loop may hold.
        threading.Thread(target=self._shutdown, name="shutdown", daemon=True).start()

    def _hand_over(self) -> None:
        self.runner.release_waiting()
        self.leadership.step_down()

    def _shutdown(self) -> None:
        for _ in range(100):  # a signal just before start(): wait for the scheduler to be running
            try:
                self.scheduler.shutdown(wait=False)
                return
            except SchedulerNotRunningError:
                self.clock.sleep(0.05)
