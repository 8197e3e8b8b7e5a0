"""schedule.yaml again on SIGHUP, without a restart.

An invalid file changes nothing: the running schedule stays, and every problem is logged
(``clock.reload_failed``, one line each). A valid one is applied job by job, as the app's changes are
(daemon/apijobs.py): added and changed jobs get their slots from now on, removed ones none, and the leading clock
publishes the new ids (``clock.reloaded added=… changed=… removed=…``). Settings of the whole file
(``workers``, ``shutdown_grace``, ``history_keep``) keep their values until the next restart.
"""

from __future__ import annotations

import threading

from dynoclock.config.loader import Schedule, load_schedule
from dynoclock.config.problems import ConfigError
from dynoclock.daemon.apijobs import ApiJobs, Slots
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.observe.redact import redact
from dynoclock.run.runner import Runner
from dynoclock.timesource import SYSTEM, Clock


class Reloader:
    def __init__(
        self, schedule: Schedule, runner: Runner, slots: Slots, api: ApiJobs, events: EventLog,
        leading: threading.Event, clock: Clock = SYSTEM,
    ):  # fmt: skip
        self.schedule = schedule
        self.runner = runner
        self.slots = slots
        self.api = api
        self.events = events
        self.leading = leading
        self.clock = clock
        self.asked = threading.Event()
        threading.Thread(target=self._loop, name="reload", daemon=True).start()

    def request(self) -> None:
        """From the SIGHUP handler: never blocks."""
        self.asked.set()

    def _loop(self) -> None:
        while True:
            self.asked.wait()
            self.asked.clear()
            try:
                self.reload()
            except Exception as exc:  # never let a reload take the clock down
                self.events.emit("clock.reload_failed", level="error", error=short_error(exc))

    def reload(self) -> None:
        try:
            new = load_schedule(self.schedule.file, now=self.clock.now())
        except ConfigError as exc:
            for problem in exc.problems:
                self.events.emit("clock.reload_failed", level="error", problem=str(problem),
                                 note="the running schedule is kept")  # fmt: skip
            return
        redact.add(new.secrets)
        now = self.clock.now()
        jobs = self.runner.schedule.jobs
        with self.api._lock:
            old = {job_id: job for job_id, job in list(jobs.items()) if job.origin == "schedule"}
            added = [job_id for job_id in new.jobs if job_id not in old]
            changed = [job_id for job_id in new.jobs if job_id in old and old[job_id] != new.jobs[job_id]]
            removed = [job_id for job_id in old if job_id not in new.jobs]
            for job_id in removed:
                self.slots.drop(job_id)
                self.runner.jobs.retire(job_id)
            for job_id in (*added, *changed):
                job = new.jobs[job_id]
                jobs[job_id] = job
                self.api.recurring.pop(job_id, None)
                if job.enabled and job.action is not None:
                    self.slots.put(job, now)
                else:
                    self.slots.drop(job_id)
        self.runner.schedule.warnings[:] = new.warnings
        if self.leading.is_set():
            try:
                self.api.publish(self.runner.schedule)
            except Exception as exc:  # the next takeover publishes them
                self.events.emit("ledger.unreachable", level="warning", error=short_error(exc))
        self.events.emit("clock.reloaded", added=",".join(added) or "-", changed=",".join(changed) or "-",
                         removed=",".join(removed) or "-", jobs=len(new.jobs), schedule=self.schedule.file)  # fmt: skip
