"""The run ledger: one row per (job, scheduled_for), claimed before the run starts.

The unique key on (job, scheduled_for) is what makes a run happen exactly once:
whichever clock inserts the row first runs the slot; every other claim of it
loses. The same tables hold run history, the clocks' heartbeats and the schema
version, in Postgres or SQLite alike (SQLAlchemy Core).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from . import db
from .redact import redact_url

SCHEMA_VERSION = 2  # 1: runs, clocks, meta; 2: + requests ("run now") and paused jobs
DEFAULT_SQLITE = "sqlite:///state/clock.db"

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
# Changes to existing tables, by the version that brings them (new tables are created above as needed).
MIGRATIONS: dict[int, list[str]] = {2: []}
SCHEMA_LOCK = 0x636C6F64  # advisory lock class (Postgres) serializing schema creation, per schema


@dataclass(frozen=True)
class Claim:
    """A slot to claim: the run id this clock will use for it, if it wins."""

    run_id: str
    job: str
    slot: datetime
    clock: str
    reason: str = "schedule"


@dataclass(frozen=True)
class Run:
    """One row of history."""

    run_id: str
    job: str
    scheduled_for: datetime
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status: str
    attempt: int
    error: str | None
    duration_ms: int | None
    clock: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = _iso(value) if isinstance(value, datetime) else value
        return out


class SchemaTooNew(RuntimeError):
    """A newer clock migrated the state database: this one must not read or write it."""


def state_url(env: Mapping[str, str] | None = None) -> str:
    """Where state lives: $CLOCK_DATABASE_URL, else $DATABASE_URL, else an embedded SQLite file."""
    env = os.environ if env is None else env
    return env.get("CLOCK_DATABASE_URL") or env.get("DATABASE_URL") or DEFAULT_SQLITE


def clock_id() -> str:
    """The dyno name on Heroku (clock.1), else host:pid; a short random tag tells apart two processes
    that share a name (Heroku's old and new clock.1 overlap during a restart)."""
    name = os.environ.get("DYNO") or f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}#{uuid.uuid4().hex[:4]}"


class Ledger:
    """Claims, outcomes and history of runs, in the state database."""

    def __init__(self, url: str):
        self.url = url
        self.engine = db.engine_for(url, state=True)
        if self.engine.dialect.name not in ("postgresql", "sqlite"):
            raise db.DatabaseUrlError(f"the clock's state needs Postgres or SQLite, not {self.engine.dialect.name}")
        self.is_postgres = db.is_postgres(self.engine)
        self._claim_stmt = self._insert(runs).on_conflict_do_nothing().returning(runs.c.run_id)

    @property
    def location(self) -> str:
        """The state URL with any password masked, for logs."""
        return redact_url(self.url)

    @property
    def sqlite_path(self) -> str | None:
        return None if self.is_postgres else self.engine.url.database

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- schema ----------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create or migrate the tables; safe when several clocks start at once on an empty database."""
        with self._tx() as conn:
            if self.is_postgres:  # CREATE TABLE IF NOT EXISTS still races on Postgres (pg_type); serialize it
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(current_schema()))"), {"k": SCHEMA_LOCK}
                )
            for table in metadata.sorted_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            version = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if version is not None and int(version) > SCHEMA_VERSION:
                raise SchemaTooNew(f"the state database has schema {version}, newer than this clock's {SCHEMA_VERSION}")
            if version is not None:
                for step in range(int(version) + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS.get(step, []):
                        conn.exec_driver_sql(statement)
            if version is None or int(version) < SCHEMA_VERSION:
                self._upsert_meta(conn, "schema_version", str(SCHEMA_VERSION))

    def _upsert_meta(self, conn: Connection, key: str, value: str) -> None:
        stmt = self._insert(meta).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

    def _insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self.is_postgres else sqlite.insert(table)

    # ---- runs ------------------------------------------------------------------------------

    def claim(self, run_id: str, job: str, slot: datetime, clock: str, reason: str = "schedule") -> bool:
        """Insert the run's row; False when another claim of (job, slot) got there first."""
        return run_id in self.claim_many([Claim(run_id, job, slot, clock, reason)])

    def claim_many(self, claims: list[Claim]) -> set[str]:
        """Claim several slots in one transaction (a burst of due jobs); returns the run ids won.

        A row that already carries our run id counts as won: the reply to an earlier try of this
        same claim may have been lost with the connection after the insert committed.
        """
        if not claims:
            return set()
        now = _naive(_now())
        rows = [
            {"run_id": c.run_id, "job": c.job, "scheduled_for": _naive(c.slot), "claimed_at": now,
             "status": "claimed", "attempt": 0, "clock": c.clock, "reason": c.reason}
            for c in claims
        ]  # fmt: skip
        with self._tx() as conn:
            # RETURNING, not rowcount: psycopg 3 reports -1 for INSERT ... ON CONFLICT through SQLAlchemy.
            # One statement built once, executed for all rows: SQLAlchemy's insertmanyvalues batches them
            # into multi-row INSERTs and keeps the compiled form cached (a fresh .values(rows) compiles anew).
            won = {run_id for (run_id,) in conn.execute(self._claim_stmt, rows)}
            lost = [c.run_id for c in claims if c.run_id not in won]
            if lost:
                mine = sa.select(runs.c.run_id).where(runs.c.run_id.in_(lost))
                won.update(run_id for (run_id,) in conn.execute(mine))
        return won

    def unclaim(self, run_id: str) -> bool:
        """Delete a claim that never started (the clock is stopping), so the next leader runs the slot."""
        with self._tx() as conn:
            gone = conn.execute(
                runs.delete().where(runs.c.run_id == run_id, runs.c.status == "claimed").returning(runs.c.run_id)
            )
            return gone.first() is not None

    def record(self, job: str, slot: datetime, status: str, clock: str, error: str, reason: str = "schedule") -> bool:
        """A slot that did not run (missed, skipped), recorded unless it already has a row."""
        row = {
            "run_id": uuid.uuid4().hex, "job": job, "scheduled_for": _naive(slot), "claimed_at": _naive(_now()),
            "finished_at": _naive(_now()), "status": status, "attempt": 0, "clock": clock, "reason": reason,
            "error": error,
        }  # fmt: skip
        with self._tx() as conn:
            # RETURNING, not rowcount: psycopg 3 reports -1 for INSERT ... ON CONFLICT through SQLAlchemy.
            stmt = self._insert(runs).values(**row).on_conflict_do_nothing().returning(runs.c.run_id)
            return conn.execute(stmt).scalar() is not None

    def started(self, run_id: str, attempt: int, clock: str) -> None:
        with self._tx() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(status="running", attempt=attempt, started_at=_naive(_now()), finished_at=None, clock=clock)
            )

    def finished(self, run_id: str, status: str, error: str | None, duration_ms: int | None) -> None:
        with self._tx() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(status=status, error=error or None, duration_ms=duration_ms, finished_at=_naive(_now()))
            )

    def update_runs(self, updates: dict[str, dict[str, Any]]) -> None:
        """Apply many row updates (run id -> column values) in one transaction, one statement per shape."""
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for run_id, values in updates.items():
            row = {k: _naive(v) if isinstance(v, datetime) else v for k, v in values.items()}
            shapes.setdefault(tuple(sorted(row)), []).append({"rid": run_id, **row})
        with self._tx() as conn:
            for columns, rows in shapes.items():
                stmt = runs.update().where(runs.c.run_id == sa.bindparam("rid"))
                conn.execute(stmt.values({c: sa.bindparam(c) for c in columns}), rows)

    def last_slots(self) -> dict[str, datetime]:
        """Each job's latest scheduled slot with a row (manual runs do not count)."""
        query = (
            sa.select(runs.c.job, sa.func.max(runs.c.scheduled_for))
            .where(runs.c.reason != "manual")
            .group_by(runs.c.job)
        )
        with self.engine.connect() as conn:
            return {job: _aware(slot) for job, slot in conn.execute(query)}

    def unfinished(self, dead_clocks_before: datetime) -> list[Run]:
        """Runs left claimed/running by clocks whose last heartbeat is older than the given instant (or gone)."""
        alive = sa.select(clocks.c.clock).where(clocks.c.heartbeat_at >= _naive(dead_clocks_before))
        query = sa.select(runs).where(runs.c.status.in_(("claimed", "running")), runs.c.clock.not_in(alive))
        with self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(query)]

    def reclaim(self, run: Run, clock: str) -> bool:
        """Take over an interrupted run to run it again (``on_interrupted: retry``); False if someone else did."""
        with self._tx() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.run_id == run.run_id, runs.c.clock == run.clock, runs.c.status == run.status)
                .values(status="claimed", clock=clock, reason="retry", error=None)
            )
            return bool(result.rowcount == 1)

    def interrupt(self, run: Run, error: str) -> bool:
        with self._tx() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.run_id == run.run_id, runs.c.clock == run.clock, runs.c.status == run.status)
                .values(status="interrupted", error=error, finished_at=_naive(_now()))
            )
            return bool(result.rowcount == 1)

    def history(self, job: str | None = None, limit: int = 50, offset: int = 0) -> list[Run]:
        query = sa.select(runs).order_by(runs.c.scheduled_for.desc(), runs.c.claimed_at.desc())
        if job is not None:
            query = query.where(runs.c.job == job)
        with self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(query.limit(limit).offset(offset))]

    def prune(self, before: datetime, batch: int = 500) -> int:
        """Delete one batch of finished rows older than ``before``; returns how many went."""
        old = (
            sa.select(runs.c.run_id)
            .where(runs.c.scheduled_for < _naive(before), runs.c.status.not_in(("claimed", "running")))
            .limit(batch)
        )
        with self._tx() as conn:
            return int(conn.execute(runs.delete().where(runs.c.run_id.in_(old))).rowcount or 0)

    # ---- clocks ----------------------------------------------------------------------------

    def heartbeat(self, clock: str, role: str, started_at: datetime) -> None:
        """This clock is alive; a leader's heartbeat also marks until when some clock led (see ``led_until``)."""
        with self._tx() as conn:
            self._heartbeat(conn, clock, role, started_at)

    def leader_round(self, clock: str, started_at: datetime) -> tuple[set[str], bool]:
        """A leader's periodic round in one transaction: its heartbeat, the paused jobs, and whether any
        "run now" request waits. An idle clock's CPU is mostly these rounds: one round trip set, not four."""
        with self._tx() as conn:
            self._heartbeat(conn, clock, "leader", started_at)
            paused_jobs = {job for (job,) in conn.execute(sa.select(paused.c.job))}
            waiting = sa.select(requests.c.request_id).where(requests.c.taken_at.is_(None)).limit(1)
            return paused_jobs, conn.execute(waiting).first() is not None

    def _heartbeat(self, conn: Connection, clock: str, role: str, started_at: datetime) -> None:
        now = _naive(_now())
        stmt = self._insert(clocks).values(clock=clock, role=role, started_at=_naive(started_at), heartbeat_at=now)
        conn.execute(stmt.on_conflict_do_update(index_elements=["clock"], set_={"role": role, "heartbeat_at": now}))
        if role == "leader":
            self._upsert_meta(conn, "led_until", _iso(_aware(now)))

    def led_until(self) -> datetime | None:
        """The last leader heartbeat on this database (None: no clock ever led here). A job with no row
        yet had every slot up to about then covered by a leader, so its catch-up starts there."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "led_until")).scalar()
        return None if value is None else _aware(datetime.fromisoformat(value))

    def forget_clock(self, clock: str) -> None:
        with self._tx() as conn:
            conn.execute(clocks.delete().where(clocks.c.clock == clock))

    def clocks(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(clocks).order_by(clocks.c.heartbeat_at.desc()))
            return [{k: _aware(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()} for row in rows]


class Controls:
    """What the status page asks of the clock: run a job now, pause or resume it."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def request_run(self, job: str, by: str) -> str:
        request_id = uuid.uuid4().hex
        row = {"request_id": request_id, "job": job, "requested_at": _naive(_now()), "requested_by": by}
        with self.ledger._tx() as conn:
            conn.execute(requests.insert().values(**row))
        return request_id

    def take_requests(self, clock: str) -> list[tuple[str, str, datetime]]:
        """Pending requests, each taken by exactly one clock: (request id, job, requested at)."""
        with self.ledger.engine.connect() as conn:
            pending = list(conn.execute(sa.select(requests.c.request_id).where(requests.c.taken_at.is_(None))))
        taken = []
        for (request_id,) in pending:
            with self.ledger._tx() as conn:
                row = conn.execute(
                    requests.update()
                    .where(requests.c.request_id == request_id, requests.c.taken_at.is_(None))
                    .values(taken_at=_naive(_now()), taken_by=clock)
                    .returning(requests.c.job, requests.c.requested_at)
                ).first()
            if row is not None:
                taken.append((request_id, row.job, _aware(row.requested_at)))
        return taken

    def pending_requests(self) -> list[dict[str, Any]]:
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(requests).where(requests.c.taken_at.is_(None)))
            return [dict(row._mapping) for row in rows]

    def pause(self, job: str, by: str) -> None:
        stmt = self.ledger._insert(paused).values(job=job, paused_at=_naive(_now()), paused_by=by)
        with self.ledger._tx() as conn:
            conn.execute(stmt.on_conflict_do_nothing())

    def resume(self, job: str) -> None:
        with self.ledger._tx() as conn:
            conn.execute(paused.delete().where(paused.c.job == job))

    def paused(self) -> dict[str, tuple[datetime, str]]:
        """Paused jobs: job -> (since, by whom)."""
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(paused))
            return {row.job: (_aware(row.paused_at), row.paused_by) for row in rows}


def _run(row: Any) -> Run:
    values = dict(row._mapping)
    for key in ("scheduled_for", "claimed_at", "started_at", "finished_at"):
        values[key] = _aware(values[key]) if values[key] is not None else None
    return Run(**values)


def _now() -> datetime:
    return datetime.now(UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
