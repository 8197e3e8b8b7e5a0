"""How one attempt of a run ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NotRequired, TypedDict, TypeGuard, get_args

from dynoclock.actions.base import JobFailed, JobTimeout, RunCancelled, RunContext
from dynoclock.config.loader import Job
from dynoclock.run.watchdog import Watch
from dynoclock.state.tables import RunReason, RunStatus

# Statuses that are recorded in the run's row (RunStatus), and those that only tell the caller what happened:
# standby (the leader runs this slot), duplicate (another claim won), released (given back at shutdown before
# it started), abandoned (written off by the watchdog, which reported it).
NotRecorded = Literal["standby", "duplicate", "released", "abandoned"]
OutcomeStatus = RunStatus | NotRecorded
_RECORDED = frozenset(get_args(RunStatus))
# What a run that did not win its claim returns (run/claims.py ClaimResult): another clock won it, the database
# stayed away past misfire_grace (recorded missed), or this clock no longer leads.
NOT_CLAIMED: dict[str, OutcomeStatus] = {"lost": "duplicate", "gave_up": "missed", "standby": "standby"}


def recorded(status: OutcomeStatus) -> TypeGuard[RunStatus]:
    return status in _RECORDED


@dataclass(slots=True)
class Outcome:
    """How one attempt ended."""

    status: OutcomeStatus
    detail: str = ""  # what an ok run reports (status=200, rows=3, exit=0)
    error: str = ""  # why it failed, in the schedule's words
    attempt: int = 1
    duration: timedelta = timedelta(0)


class RunFields(TypedDict):
    """What names a run in every log line about it."""

    job: str
    run_id: str
    scheduled_for: datetime
    reason: NotRequired[RunReason]  # absent for a scheduled slot


def run_action(job: Job, ctx: RunContext, watch: Watch) -> Outcome:
    """The action, in this thread; the watchdog may cancel it, interrupt it, or write it off."""
    detail, error = "", None
    try:
        try:
            assert job.action is not None  # jobs without one (disabled, unset variables) are never scheduled
            detail = job.action.run(ctx) or ""
        except JobFailed as exc:
            error = exc
        except RunCancelled:
            error = JobFailed("cancelled")
        except BaseException as exc:  # the job's own bug: report it, never crash the clock
            error = JobFailed(f"{type(exc).__name__}: {exc}")
        finally:
            kept = watch.finish()
    except RunCancelled:  # the watchdog's exception landed just as the action returned
        kept = watch.finish()
    if not kept:
        return Outcome("abandoned")
    if ctx.cancel_reason == "timeout":
        return Outcome("timeout", error=str(JobTimeout(job.timeout)))
    if ctx.cancel_reason == "shutdown":
        return Outcome("interrupted", error="stopped at shutdown")
    if ctx.cancel_reason == "replaced":
        return Outcome("interrupted", error="overlap=replace: a newer run started")
    if error is not None:
        # The action may notice its deadline a moment before we do (SQLite's progress handler,
        # Postgres' statement_timeout, an HTTP read timeout): still a timeout, not a failure.
        return Outcome("timeout" if isinstance(error, JobTimeout) else "failed", error=str(error))
    return Outcome("ok", detail=str(detail))
