"""What ran and what comes next, read from the ledger: the ``history`` and ``status`` commands and the status page.

Imports nothing that needs a database driver at load time: ``check`` and ``next`` import the CLI, which names
``StateUnavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from dynoclock.config.loader import Job, Schedule
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from dynoclock.state.ledger import Ledger
    from dynoclock.state.runs import Run

FAILED = ("failed", "timeout", "interrupted", "missed")


class StateUnavailable(Exception):
    """The state database cannot be reached or read (a bad URL, or the server is down)."""


class StateMisconfigured(StateUnavailable):
    """The state database's role may not make or use the clock's schema: the setup needs fixing (exit 2)."""


class JobStatusJSON(TypedDict):
    """One job in ``status --json`` and the API: ``JobStatus.as_json``."""

    id: str
    origin: str
    schedule: str
    timezone: str
    enabled: bool
    next: str | None
    last: dict[str, str | int | None] | None  # Run.as_json
    failures_in_a_row: int
    paused: bool


@dataclass(frozen=True)
class JobStatus:
    job: Job
    next_run: datetime | None
    last: Run | None
    failures_in_a_row: int
    paused: bool = False

    def as_json(self) -> JobStatusJSON:
        return {
            "id": self.job.id,
            "origin": self.job.origin,
            "schedule": self.job.describe(),
            "timezone": self.job.zone.key,
            "enabled": self.job.enabled,
            "next": self.next_run.astimezone(self.job.zone).isoformat() if self.next_run else None,
            "last": self.last.as_json() if self.last else None,
            "failures_in_a_row": self.failures_in_a_row,
            "paused": self.paused,
        }


def job_statuses(
    schedule: Schedule, ledger: Ledger, now: datetime | None = None, clock: Clock = SYSTEM, api: bool = True
) -> list[JobStatus]:
    """Each job's next run after ``now`` (default: the clock's now), its last run, and its failures in a row; the
    schedule's jobs, then (``api``) those added from the app."""
    from dynoclock.state.controls import Controls

    now = now or clock.now()
    paused = Controls(ledger).paused()
    out = []
    for job in [*schedule.jobs.values(), *(api_jobs(ledger, set(schedule.jobs)) if api else [])]:
        recent = [run for run in ledger.history(job.id, limit=50) if run.status not in ("claimed", "skipped")]
        streak = 0
        for run in recent:
            if run.status == "running":
                continue
            if run.status not in FAILED:
                break
            streak += 1
        next_run = job.next_after(now) if job.enabled else None
        out.append(JobStatus(job, next_run, recent[0] if recent else None, streak, job.id in paused))
    return out


def api_jobs(ledger: Ledger, skip: set[str]) -> list[Job]:
    """The jobs added from the app (recurring ones, and the next pending one-offs), as the clock reads them."""
    from dynoclock.client import job_of
    from dynoclock.state.jobstore import JobStore

    listed = [job_of(row) for row in JobStore(ledger).listed() if row.origin == "api" and row.id not in skip]
    return [job for job in listed if job is not None]
