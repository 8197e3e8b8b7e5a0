"""The clock's tables, and the schema version they make."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

SCHEMA_VERSION = 4  # 1: runs, clocks, meta; 2: + requests ("run now") and paused jobs; 3: + the leader lease row;
# 4: + jobs (added from the app, and the ids of the leading clock's schedule.yaml jobs)

# The status column: claimed (a clock won the slot), running, then how it ended; or why the slot did not run.
RunStatus = Literal["claimed", "running", "ok", "failed", "timeout", "interrupted", "skipped", "missed"]
UNFINISHED: tuple[RunStatus, ...] = ("claimed", "running")
# The reason column: why the run exists (a scheduled slot, a takeover's catch-up, "run now"/`run JOB`, a retry of
# a run a dead clock left behind).
RunReason = Literal["schedule", "catch_up", "manual", "retry"]

metadata = sa.MetaData()
runs = sa.Table(
    "clock_runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("job", sa.String(100), nullable=False),
    sa.Column("scheduled_for", sa.DateTime, nullable=False),  # naive UTC, as every DateTime here
    sa.Column("claimed_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("clock", sa.String(200), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False, server_default="schedule"),  # schedule|catch_up|manual|retry
    sa.UniqueConstraint("job", "scheduled_for", name="clock_runs_slot"),
)
sa.Index("clock_runs_scheduled_for", runs.c.scheduled_for)
sa.Index("clock_runs_status", runs.c.status)
clocks = sa.Table(
    "clock_clocks",
    metadata,
    sa.Column("clock", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # leader | standby | stopping
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
)
meta = sa.Table(
    "clock_meta",
    metadata,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)
requests = sa.Table(  # "run now" asks from the status page, picked up by the leader
    "clock_requests",
    metadata,
    sa.Column("request_id", sa.String(32), primary_key=True),
    sa.Column("job", sa.String(100), nullable=False),
    sa.Column("requested_at", sa.DateTime, nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("taken_at", sa.DateTime),
    sa.Column("taken_by", sa.String(200)),
)
paused = sa.Table(
    "clock_paused",
    metadata,
    sa.Column("job", sa.String(100), primary_key=True),
    sa.Column("paused_at", sa.DateTime, nullable=False),
    sa.Column("paused_by", sa.String(200), nullable=False),
)
lease = sa.Table(  # the leader lease on Postgres (state/lease.py): times are the database's own
    "clock_lease",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),  # +1 at every takeover: the fencing token of claims
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("backend_pid", sa.Integer),  # the holder's last server process, to see at once that it died
    sa.Column("backend_start", sa.DateTime(timezone=True)),
)
jobs = sa.Table(  # runtime jobs (state/jobstore.py): the app's (origin api), and the leader's schedule.yaml ids
    "clock_jobs",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("origin", sa.String(16), nullable=False),  # api | schedule (a row naming a schedule.yaml job, no spec)
    sa.Column("kind", sa.String(8), nullable=False),  # cron | every | at
    sa.Column("spec", sa.Text),  # the job's keys as JSON (api only)
    sa.Column("next_fire_at", sa.DateTime),  # a one-off's instant until its run is over; NULL: finished, recurring
    sa.Column("version", sa.Integer, nullable=False),  # +1 at every change: a claim commits only under its version
    sa.Column("changed_seq", sa.BigInteger, nullable=False),  # table-wide order of changes: what the leader polls
    sa.Column("removed_at", sa.DateTime),  # a removed job stays as a tombstone a while, so the leader sees it go
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
sa.Index("clock_jobs_next_fire_at", jobs.c.next_fire_at)
sa.Index("clock_jobs_changed_seq", jobs.c.changed_seq)
# Every row but the pending one-offs (recurring, schedule.yaml's, removed, over): what the leader's takeover, the
# listings and the prune read, without a scan of millions of pending one-offs (state/jobstore.py ``unscheduled``).
# Partial: its WHERE is given per dialect as the tables are made (``partial_indexes``), since a dialect named here
# would load that SQLAlchemy dialect into every process (the one a clock does not use is 1-2 MB of memory).
unscheduled_index = sa.Index("clock_jobs_unscheduled", jobs.c.updated_at)
run_totals = sa.Table(  # counters the metrics read (state/totals.py): they survive pruning, unlike history rows
    "clock_run_totals",
    metadata,
    sa.Column("job", sa.String(100), primary_key=True),
    sa.Column("series", sa.String(40), primary_key=True),  # runs:<status>, duration_le:<le>, lateness_sum_ms, ...
    sa.Column("value", sa.BigInteger, nullable=False),
)
# Changes to existing tables, by the version that brings them (new tables are created above as needed).
MIGRATIONS: dict[int, list[str]] = {2: [], 3: [], 4: []}
SCHEMA_LOCK = 0x636C6F64  # advisory lock class (Postgres) serializing schema creation, per schema


def partial_indexes(dialect: str) -> None:
    """The partial indexes' WHERE for ``dialect`` (postgresql, sqlite): before their CREATE INDEX is compiled."""
    unscheduled_index.dialect_kwargs[f"{dialect}_where"] = jobs.c.next_fire_at.is_(None)


def insert_for(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` with the dialect's ON CONFLICT (postgresql, sqlite); the dialect's module is
    imported here, so that a process loads only the one it uses (the other is 1-2 MB of memory)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def to_db(moment: datetime) -> datetime:
    """Every DateTime column holds naive UTC (SQLite keeps no zone)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
