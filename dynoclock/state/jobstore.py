"""Runtime jobs in the state database (``clock_jobs``): what the app adds, changes and removes, and what the leader
reads back.

Every change goes through ``JobStore.write`` inside one transaction (the store's own, or the app's): it raises
the change counter (``clock_meta`` key ``jobs_seq``) first, which takes that row's lock until the transaction ends,
so changes commit in the order of their number and the leader, reading ``changed_seq > seen``, never misses one;
on Postgres it also issues ``NOTIFY dynoclock_jobs`` (delivered only at commit). A row of origin ``schedule``
names a job of the leading clock's schedule.yaml (published at each takeover and reload): the app may pause,
resume and run it, never add, change or remove it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Result
from sqlalchemy.engine.interfaces import _CoreAnyExecuteParams
from sqlalchemy.sql.expression import Executable

from dynoclock.jsontypes import JSONObject
from dynoclock.state import bulk
from dynoclock.state.changes import Counter
from dynoclock.state.ledger import Ledger
from dynoclock.state.schema import qualified
from dynoclock.state.tables import from_db, jobs, meta, runs, to_db

CHANNEL = "dynoclock_jobs"
SEQ_KEY = "jobs_seq"


def schema_of(ledger: Ledger) -> str | None:
    """Where the clock's tables live on Postgres when the ledger names a schema of its own (None: where the
    connection's search_path finds them). Raw SQL and the app's own connection need it spelled out."""
    schema = getattr(ledger, "schema", None)
    return schema if isinstance(schema, str) else None


class _Translated:
    """The app's connection, our statements run on it with the clock's schema; the app's own statements are left
    as they are (``execution_options`` on a Connection would change it for the app too)."""

    def __init__(self, conn: Connection, schema: str):
        self.conn = conn
        self.options = {"schema_translate_map": {None: schema}}

    def execute(self, statement: Executable, parameters: _CoreAnyExecuteParams | None = None) -> Result[Any]:
        return self.conn.execute(statement, parameters, execution_options=self.options)


FINAL = ("ok", "failed", "timeout", "interrupted", "skipped", "missed")
# Rows with no next fire time: recurring and schedule.yaml rows, removed ones, one-offs over (every row but the
# pending one-offs, which may be millions): the partial index clock_jobs_unscheduled covers exactly these.
unscheduled = jobs.c.next_fire_at.is_(None)


@dataclass(frozen=True)
class JobRow:
    id: str
    origin: str  # api | schedule
    kind: str  # cron | every | at
    spec: JSONObject | None
    next_fire_at: datetime | None
    version: int
    changed_seq: int
    removed: bool
    created_at: datetime
    updated_at: datetime


def row_of(row: sa.Row[Any]) -> JobRow:
    return JobRow(
        id=row.id, origin=row.origin, kind=row.kind, spec=None if row.spec is None else json.loads(row.spec),
        next_fire_at=None if row.next_fire_at is None else from_db(row.next_fire_at), version=row.version,
        changed_seq=row.changed_seq, removed=row.removed_at is not None, created_at=from_db(row.created_at),
        updated_at=from_db(row.updated_at),
    )  # fmt: skip


_SPEC_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)  # json.dumps with these
# options builds an encoder at every call: a third of the cost of a small spec, 10,000 at a takeover


def spec_text(spec: JSONObject) -> str:
    """The stored form of a spec: canonical JSON, so that the same spec given twice compares equal."""
    return _SPEC_JSON.encode(spec)


class JobStore:
    """Reads and writes of ``clock_jobs`` on the state database of ``ledger``."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.clock = ledger.clock
        self._add_text: sa.TextClause | None = None
        self._insert_text: sa.TextClause | None = None

    @contextmanager
    def tx(self, connection: Connection | None = None) -> Iterator[Connection]:
        """The app's connection as it is (its transaction decides), or a transaction of our own."""
        if connection is not None:
            schema = schema_of(self.ledger)
            yield connection if schema is None else _Translated(connection, schema)  # type: ignore[misc]
            return
        with self.ledger._tx() as conn:
            yield conn

    def bump(self, conn: Connection) -> int:
        """Raise the change counter (locking its row until the transaction ends) and wake the leader at commit:
        one round trip."""
        value = sa.cast(sa.cast(meta.c.value, sa.BigInteger) + 1, sa.String)
        insert = self.ledger._insert(meta).values(key=SEQ_KEY, value="1")
        stmt = insert.on_conflict_do_update(index_elements=["key"], set_={"value": value}).returning(meta.c.value)
        if not self.ledger.is_postgres:
            return int(conn.execute(stmt).scalar_one())
        bumped = stmt.cte("bumped")  # raised and NOTIFY sent in one round trip (delivered at commit)
        schema = schema_of(self.ledger)
        payload = sa.literal(schema) if schema is not None else sa.func.current_schema()
        return int(conn.execute(sa.select(bumped.c.value, sa.func.pg_notify(CHANNEL, payload))).scalar_one())

    def add(self, conn: Connection, rows: list[JSONObject]) -> tuple[int, set[str]]:
        """Raise the counter, then insert the rows whose id has none yet: returns the change's number and the ids
        inserted (the others are the caller's to read and compare). On Postgres one round trip: the bump (its row
        lock taken before any row goes in), the NOTIFY and a multi-row insert from one JSON text (a short statement
        whatever the number of rows, so the driver parses no long text)."""
        if not rows or not self.ledger.is_postgres:
            seq = self.bump(conn)
            return seq, self.insert(conn, rows, seq)
        now = to_db(self.clock.now()).isoformat()
        params = _rows_json(rows, datetime.isoformat) | {
            "now": now, "key": SEQ_KEY, "channel": CHANNEL, "schema": schema_of(self.ledger)
        }  # fmt: skip
        seq, inserted = conn.execute(self._add_sql(), params).one()
        return int(seq), set(inserted)

    def _add_sql(self) -> sa.TextClause:
        if self._add_text is None:
            name = schema_of(self.ledger)
            self._add_text = sa.text(
                f"WITH bumped AS (INSERT INTO {qualified(name, 'clock_meta')} AS m (key, value) VALUES (:key, '1') "
                "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(m.value AS BIGINT) + 1 AS VARCHAR) "
                "RETURNING CAST(m.value AS BIGINT) AS seq, "
                "pg_notify(:channel, COALESCE(CAST(:schema AS TEXT), current_schema())) AS woken), "
                f"added AS ({bulk.insert_jobs_sql(name, 'b.seq', 'bumped AS b, ')}) "
                "SELECT b.seq, ARRAY(SELECT id FROM added) FROM bumped AS b"
            )
        return self._add_text

    def drop_new(self, conn: Connection, ids: Iterable[str]) -> None:
        """Rows this transaction just inserted, deleted again: a change refused part-way leaves none of its rows
        in the app's transaction (``add`` inserts before it can compare the ids that had rows)."""
        wanted = list(ids)
        for start in range(0, len(wanted), 1000):
            conn.execute(jobs.delete().where(jobs.c.id.in_(wanted[start : start + 1000])))

    def get(self, conn: Connection, ids: Iterable[str]) -> dict[str, JobRow]:
        wanted = list(ids)
        out: dict[str, JobRow] = {}
        for start in range(0, len(wanted), 1000):
            query = sa.select(jobs).where(jobs.c.id.in_(wanted[start : start + 1000]))
            out.update((row.id, row_of(row)) for row in conn.execute(query))
        return out

    def insert(self, conn: Connection, rows: list[JSONObject], seq: int) -> set[str]:
        """New rows (id, origin, kind, spec as a dict or None, next_fire_at); an id that has a row already is left
        alone. Returns the ids inserted. One statement whatever their number, the rows as one JSON text
        (``_rows_json``): SQLAlchemy's multi-row INSERTs hand the driver texts of thousands of placeholders
        (Postgres: parsed anew in Python for every batch; 10,000 rows took 0.5 s of CPU at a clock's first
        takeover)."""
        if not rows:
            return set()
        postgres = self.ledger.is_postgres
        if self._insert_text is None:
            self._insert_text = sa.text(bulk.insert_jobs_sql(schema_of(self.ledger), ":seq", "", postgres))
        stamp = bulk.stamp(conn.dialect)
        params = _rows_json(rows, stamp) | {"seq": seq, "now": stamp(to_db(self.clock.now()))}
        return set(conn.execute(self._insert_text, params).scalars())

    def replace(self, conn: Connection, old: JobRow, new: JSONObject, seq: int) -> None:
        """A new spec (or origin) for an existing row, removed or not: version + 1."""
        now = to_db(self.clock.now())
        conn.execute(
            jobs.update()
            .where(jobs.c.id == old.id)
            .values(
                origin=new["origin"],
                kind=new["kind"],
                spec=None if new["spec"] is None else spec_text(new["spec"]),
                next_fire_at=None if new["next_fire_at"] is None else to_db(new["next_fire_at"]),
                version=old.version + 1,
                changed_seq=seq,
                removed_at=None,
                updated_at=now,
                **({"created_at": now} if old.removed else {}),
            )
        )

    def remove(self, conn: Connection, old: JobRow, seq: int) -> None:
        """A tombstone: the leader sees the job go; its history stays."""
        now = to_db(self.clock.now())
        conn.execute(
            jobs.update()
            .where(jobs.c.id == old.id)
            .values(version=old.version + 1, changed_seq=seq, removed_at=now, next_fire_at=None, updated_at=now)
        )

    def touch(self, conn: Connection, job_id: str, seq: int) -> None:
        """Wake the leader for this job (a pause, a resume, a "run now") without changing its version."""
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(changed_seq=seq))

    # ---- what the leader reads -------------------------------------------------------------

    def seq(self) -> int:
        with self.ledger.engine.connect() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == SEQ_KEY)).scalar()
        return 0 if value is None else int(value)

    def counter(self) -> Counter:
        return Counter(self.ledger, qualified(schema_of(self.ledger), "clock_meta"), SEQ_KEY, CHANNEL)

    def next_one_off(self, after: datetime) -> datetime | None:
        """When the first live api one-off due after ``after`` with no final run is due (None: there is none)."""
        first_at = sa.func.min(jobs.c.next_fire_at)
        query = self._pending().where(jobs.c.next_fire_at > to_db(after)).with_only_columns(first_at)
        with self.ledger.engine.connect() as conn:
            first = conn.execute(query).scalar()
        return None if first is None else from_db(first)

    def changed_since(self, seen: int, horizon: datetime) -> list[JobRow]:
        """Rows changed after ``seen``: recurring ones, one-offs due up to ``horizon`` and those that ended."""
        due = sa.or_(jobs.c.kind != "at", jobs.c.next_fire_at.is_(None), jobs.c.next_fire_at <= to_db(horizon))
        query = sa.select(jobs).where(jobs.c.changed_seq > seen, due).order_by(jobs.c.changed_seq)
        with self.ledger.engine.connect() as conn:
            return [row_of(row) for row in conn.execute(query)]

    def recurring(self, origin: str | None = None) -> list[JobRow]:
        """Every live recurring row (api and schedule, or only those of ``origin``): from the index of rows with no
        next fire time, not a scan of the pending one-offs."""
        query = sa.select(jobs).where(unscheduled, jobs.c.kind != "at", jobs.c.removed_at.is_(None))
        if origin is not None:
            query = query.where(jobs.c.origin == origin)
        with self.ledger.engine.connect() as conn:
            return [row_of(row) for row in conn.execute(query)]

    def one_offs(self, after: datetime | None, until: datetime, limit: int | None = None) -> list[JobRow]:
        """Live api one-offs due in (``after``, ``until``] (from the start when ``after`` is None) whose run has no
        final row yet, soonest first: what the leader holds in memory (the index on next_fire_at)."""
        query = self._pending().where(jobs.c.next_fire_at <= to_db(until))
        if after is not None:
            query = query.where(jobs.c.next_fire_at > to_db(after))
        query = query.order_by(jobs.c.next_fire_at)
        if limit is not None:
            query = query.limit(limit)
        with self.ledger.engine.connect() as conn:
            return [row_of(row) for row in conn.execute(query)]

    def page(self, limit: int, after: tuple[datetime, str] | None = None) -> tuple[list[JobRow], int]:
        """A page of the pending one-offs, in (next fire time, id) order, from after the cursor ``after`` (the last
        row of the page before), and how many come after this page."""
        query = self._pending()
        if after is not None:
            at, job_id = to_db(after[0]), after[1]
            query = query.where(jobs.c.next_fire_at >= at, sa.or_(jobs.c.next_fire_at > at, jobs.c.id > job_id))
        with self.ledger.engine.connect() as conn:
            rows = [row_of(row) for row in conn.execute(query.order_by(jobs.c.next_fire_at, jobs.c.id).limit(limit))]
            rest = query.with_only_columns(sa.func.count()).order_by(None)
            if rows:
                assert rows[-1].next_fire_at is not None
                last = to_db(rows[-1].next_fire_at)
                rest = rest.where(
                    jobs.c.next_fire_at >= last, sa.or_(jobs.c.next_fire_at > last, jobs.c.id > rows[-1].id)
                )
            return rows, int(conn.execute(rest).scalar_one()) if rows else 0

    def _pending(self) -> sa.Select[Any]:
        """Live api one-offs whose run has no final row yet."""
        done = sa.exists().where(
            runs.c.job == jobs.c.id, runs.c.scheduled_for == jobs.c.next_fire_at, runs.c.status.in_(FINAL)
        )
        return sa.select(jobs).where(
            jobs.c.kind == "at", jobs.c.origin == "api", jobs.c.next_fire_at.is_not(None), ~done
        )

    def finish_one_offs(self, before: datetime) -> int:
        """One-offs due before ``before`` whose run has a final row leave the job list (their history stays)."""
        done = sa.exists().where(
            runs.c.job == jobs.c.id, runs.c.scheduled_for == jobs.c.next_fire_at, runs.c.status.in_(FINAL)
        )
        stmt = (
            jobs.update()
            .where(jobs.c.kind == "at", jobs.c.next_fire_at.is_not(None), jobs.c.next_fire_at < to_db(before), done)
            .values(next_fire_at=None, updated_at=to_db(self.clock.now()))
        )
        with self.ledger._tx() as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def prune(self, before: datetime, batch: int = 500) -> int:
        """Delete one batch of rows removed, or one-offs over, before ``before`` (so ``at(key=…)`` is idempotent
        for as long as the history is kept); returns how many went."""
        gone = sa.or_(jobs.c.removed_at.is_not(None), jobs.c.kind == "at")
        old = sa.select(jobs.c.id).where(unscheduled, gone, jobs.c.updated_at < to_db(before)).limit(batch)
        with self.ledger._tx() as conn:
            return int(conn.execute(jobs.delete().where(jobs.c.id.in_(old))).rowcount or 0)

    def listed(self, one_offs: int = 200) -> list[JobRow]:
        """What ``jobs()``, ``status`` and the page list: every live recurring row, and the next ``one_offs``
        pending one-offs."""
        return [row for row in self.recurring()] + self.one_offs(None, datetime(9999, 1, 1), limit=one_offs)


def _rows_json(rows: list[JSONObject], stamp: Callable[[datetime], str]) -> dict[str, object]:
    """New rows as one JSON text, for ``bulk.insert_jobs_sql``: one parameter whatever their number, which the
    driver sends as it is (instants as ``stamp`` writes them for the store)."""
    out = []
    for r in rows:
        fire = r["next_fire_at"]
        out.append({
            "id": r["id"], "origin": r["origin"], "kind": r["kind"],
            "spec": None if r["spec"] is None else spec_text(r["spec"]),
            "next_fire_at": None if fire is None else stamp(to_db(fire)),
        })  # fmt: skip
    return {"rows": json.dumps(out)}
