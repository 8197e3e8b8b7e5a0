"""The ledger's values: a claim to make, a row of history, and the errors its writes raise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

import sqlalchemy as sa

from dynoclock.observe.timefmt import iso_utc
from dynoclock.state.tables import RunReason, RunStatus, from_db


@dataclass(frozen=True)
class Claim:
    """A slot to claim: the run id this clock will use for it, if it wins."""

    run_id: str
    job: str
    slot: datetime
    clock: str
    reason: RunReason = "schedule"
    version: int | None = None  # an api job's: the claim commits only while its row has this version


@dataclass(frozen=True)
class Run:
    """One row of history."""

    run_id: str
    job: str
    scheduled_for: datetime
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status: RunStatus
    attempt: int
    error: str | None
    duration_ms: int | None
    clock: str
    reason: RunReason

    def as_json(self) -> dict[str, str | int | None]:
        out: dict[str, str | int | None] = {}
        for key, value in self.__dict__.items():
            out[key] = iso_utc(value) if isinstance(value, datetime) else value
        return out


class ClockBeat(TypedDict):
    """A clock's row: its id, ``leader``/``standby``/``stopping``, when it started, its last heartbeat."""

    clock: str
    role: str
    started_at: datetime
    heartbeat_at: datetime


class LeaseLost(RuntimeError):
    """A claim made under a lease this clock no longer holds: nothing was written."""


class SchemaTooNew(RuntimeError):
    """A newer clock migrated the state database: this one must not read or write it."""


def run_of(row: sa.RowMapping) -> Run:
    """A ``clock_runs`` row (its mapping) as a ``Run``."""
    values = dict(row)
    for key in ("scheduled_for", "claimed_at", "started_at", "finished_at"):
        values[key] = from_db(values[key]) if values[key] is not None else None
    return Run(**values)
