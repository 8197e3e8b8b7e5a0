"""How one attempt of a run ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, NotRequired, TypedDict, TypeGuard, get_args

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


@dataclass
class Outcome:
    """How one attempt ended."""

    status: OutcomeStatus
    detail: str = ""  # what an ok run reports (status=200, rows=3, exit=0)
    error: str = ""  # why it failed, in the schedule's words
    attempt: int = 1
    duration: timedelta = field(default_factory=timedelta)


class RunFields(TypedDict):
    """What names a run in every log line about it."""

    job: str
    run_id: str
    scheduled_for: datetime
    reason: NotRequired[RunReason]  # absent for a scheduled slot
