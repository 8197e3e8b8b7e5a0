"""Run-row writes of many rows in one statement: the rows go as one JSON text, read back as a table by the database
(Postgres ``json_to_recordset``, SQLite ``json_each``).

A statement per row costs SQLAlchemy's per-execution work for each (SQLite: 62 ms for the 1,000 start writes of a
burst, during which no run of it could start), and arrays cost the driver's per-element escaping in Python
(psycopg: as much again). One JSON text is encoded in C and parsed by the database, whatever the number of rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache

import sqlalchemy as sa

from dynoclock.state.schema import qualified
from dynoclock.state.tables import runs

MIN_ROWS = 4  # fewer rows go one statement each: a join with a JSON table plans slower than an update by key
_SQL_TYPES = {"attempt": "INTEGER", "duration_ms": "INTEGER", "started_at": "TIMESTAMP", "finished_at": "TIMESTAMP"}
_PG_BEGIN = """
UPDATE {runs} AS r SET status = 'running', attempt = v.att, started_at = v.at, finished_at = NULL, error = NULL,
    duration_ms = NULL
FROM json_to_recordset(CAST(:rows AS JSON)) AS v(rid TEXT, att INTEGER, at TIMESTAMP)
WHERE r.run_id = v.rid AND r.clock = :me AND (r.status = 'claimed' OR (r.status = 'running' AND r.started_at = v.at))
RETURNING r.run_id
"""
# SQLite's UPDATE ... FROM names the target by its table name (no alias); json_each yields one row per element.
# The unary + keeps SQLite off the status index (it would walk every claimed and running row for each JSON row):
# each row is found by its run id.
_SQLITE_BEGIN = """
UPDATE {runs} SET status = 'running', attempt = v.att, started_at = v.at, finished_at = NULL, error = NULL,
    duration_ms = NULL
FROM (SELECT json_extract(value, '$.rid') AS rid, json_extract(value, '$.att') AS att,
    json_extract(value, '$.at') AS at FROM json_each(:rows)) AS v
WHERE {runs}.run_id = v.rid AND {runs}.clock = :me
    AND (+{runs}.status = 'claimed' OR (+{runs}.status = 'running' AND {runs}.started_at = v.at))
RETURNING {runs}.run_id
"""

_PG_TOTALS = """
INSERT INTO {totals} AS t (job, series, value)
SELECT v.job, v.series, v.value FROM json_to_recordset(CAST(:rows AS JSON)) AS v(job TEXT, series TEXT, value BIGINT)
ORDER BY v.job, v.series
ON CONFLICT (job, series) DO UPDATE SET value = t.value + EXCLUDED.value
"""
# "WHERE true": SQLite's parser needs it between an INSERT's SELECT and its ON CONFLICT.
_SQLITE_TOTALS = """
INSERT INTO {totals} (job, series, value)
SELECT json_extract(value, '$.job'), json_extract(value, '$.series'), json_extract(value, '$.value')
FROM json_each(:rows) WHERE true
ON CONFLICT (job, series) DO UPDATE SET value = {totals}.value + excluded.value
"""

_PG_CLAIM = """
INSERT INTO {runs} (run_id, job, scheduled_for, claimed_at, status, attempt, clock, reason)
SELECT v.run_id, v.job, v.slot, v.at, 'claimed', 0, v.clock, v.reason
FROM json_to_recordset(CAST(:rows AS JSON)) AS v(run_id TEXT, job TEXT, slot TIMESTAMP, at TIMESTAMP, clock TEXT,
    reason TEXT)
ORDER BY v.job, v.slot
ON CONFLICT DO NOTHING RETURNING run_id
"""
_SQLITE_CLAIM = """
INSERT INTO {runs} (run_id, job, scheduled_for, claimed_at, status, attempt, clock, reason)
SELECT json_extract(value, '$.run_id'), json_extract(value, '$.job'), json_extract(value, '$.slot'),
    json_extract(value, '$.at'), 'claimed', 0, json_extract(value, '$.clock'), json_extract(value, '$.reason')
FROM json_each(:rows) WHERE true
ON CONFLICT DO NOTHING RETURNING run_id
"""


def claim(conn: sa.Connection, schema: str | None, rows: Sequence[tuple[str, str, datetime, str, str]],
          at: datetime) -> set[str]:  # fmt: skip
    """``Ledger.claim_many``'s insert: (run id, job, naive UTC slot, clock, reason) each, claimed at ``at``, in
    (job, slot) order (two clocks claiming overlapping batches lock rows in the same order); the run ids inserted
    (a slot or run id that has a row already is left alone)."""
    text_of = stamp(conn.dialect)
    when = text_of(at)
    data = [{"run_id": r, "job": job, "slot": text_of(slot), "at": when, "clock": clock, "reason": reason}
            for r, job, slot, clock, reason in sorted(rows, key=lambda row: (row[1], row[2]))]  # fmt: skip
    sql = _PG_CLAIM if conn.dialect.name == "postgresql" else _SQLITE_CLAIM
    return {run_id for (run_id,) in conn.execute(_statement(sql, schema), {"rows": json.dumps(data)})}


def begin(conn: sa.Connection, schema: str | None, starts: Sequence[tuple[str, int, datetime]], clock: str) -> set[str]:
    """``Ledger.begin`` in one statement: (run id, attempt, naive UTC instant) each; the run ids marked started."""
    text_of = stamp(conn.dialect)
    rows = [{"rid": run_id, "att": attempt, "at": text_of(at)} for run_id, attempt, at in sorted(starts)]
    sql = _PG_BEGIN if conn.dialect.name == "postgresql" else _SQLITE_BEGIN
    params = {"rows": json.dumps(rows), "me": clock}
    return set(conn.execute(_statement(sql, schema), params).scalars())


def update(conn: sa.Connection, schema: str | None, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    """``Ledger.update_runs``: the rows of one shape (their ``rid`` and ``columns``, instants naive UTC) in one
    statement."""
    text_of = stamp(conn.dialect)
    ordered = sorted(rows, key=lambda row: str(row["rid"]))  # rows locked in run id order, as one by one did
    data = [{k: text_of(v) if isinstance(v, datetime) else v for k, v in row.items()} for row in ordered]
    sql = _update_sql(columns, conn.dialect.name == "postgresql")
    conn.execute(_statement(sql, schema), {"rows": json.dumps(data)})


def add_totals(conn: sa.Connection, schema: str | None, rows: list[tuple[str, str, int]]) -> None:
    """``totals.add``: (job, series, increment) rows, in key order, added in one statement."""
    data = json.dumps([{"job": job, "series": series, "value": n} for job, series, n in rows])
    sql = _PG_TOTALS if conn.dialect.name == "postgresql" else _SQLITE_TOTALS
    conn.execute(_statement(sql, schema), {"rows": data})


def insert_jobs_sql(schema: str | None, seq: str, source: str, postgres: bool = True) -> str:
    """``JobStore.insert``: the rows of its JSON text inserted under change ``seq`` (an expression), an id that has
    a row already left alone; returns the ids inserted. ``source`` (Postgres): what else the SELECT reads from
    (``x AS b, ``)."""
    columns = "id, origin, kind, spec, next_fire_at, version, changed_seq, removed_at, created_at, updated_at"
    if not postgres:  # "WHERE true": SQLite's parser needs it between an INSERT's SELECT and its ON CONFLICT
        picks = ", ".join(f"json_extract(value, '$.{c}')" for c in ("id", "origin", "kind", "spec", "next_fire_at"))
        return (
            f"INSERT INTO {qualified(schema, 'clock_jobs')} ({columns}) SELECT {picks}, 1, {seq}, NULL, :now, :now "
            "FROM json_each(:rows) WHERE true ON CONFLICT (id) DO NOTHING RETURNING id"
        )
    return (
        f"INSERT INTO {qualified(schema, 'clock_jobs')} ({columns}) SELECT r.id, r.origin, r.kind, r.spec, "
        f"r.next_fire_at, 1, {seq}, NULL, CAST(:now AS TIMESTAMP), CAST(:now AS TIMESTAMP) "
        f"FROM {source}json_to_recordset(CAST(:rows AS JSON)) "
        "AS r(id VARCHAR, origin VARCHAR, kind VARCHAR, spec TEXT, next_fire_at TIMESTAMP) "
        "ON CONFLICT (id) DO NOTHING RETURNING id"
    )


def ids_in(column: sa.ColumnElement[str], ids: Sequence[str], dialect: sa.Dialect) -> sa.ColumnElement[bool]:
    """``column IN ids`` with the ids as one JSON text: an IN of 1,000 placeholders is a long text that the
    Postgres driver parses in Python, and SQLite caps the number of placeholders."""
    text = sa.bindparam("ids", json.dumps(list(ids)), type_=sa.String, unique=True)
    if dialect.name == "postgresql":
        return column.in_(sa.select(sa.func.json_array_elements_text(sa.cast(text, sa.JSON))))
    return column.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(text)))


@cache
def _update_sql(columns: tuple[str, ...], postgres: bool) -> str:
    if postgres:
        fields = ", ".join(f"{c} {_SQL_TYPES.get(c, 'TEXT')}" for c in ("rid", *columns))
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        return f"UPDATE {{runs}} AS r SET {sets} FROM json_to_recordset(CAST(:rows AS JSON)) AS v({fields}) " + (
            "WHERE r.run_id = v.rid"
        )
    picks = ", ".join(f"json_extract(value, '$.{c}') AS {c}" for c in ("rid", *columns))
    sets = ", ".join(f"{c} = v.{c}" for c in columns)
    return f"UPDATE {{runs}} SET {sets} FROM (SELECT {picks} FROM json_each(:rows)) AS v WHERE {{runs}}.run_id = v.rid"


def stamp(dialect: sa.Dialect) -> Callable[[datetime], str]:
    """An instant as the dialect stores it: Postgres reads ISO text; on SQLite the text must be SQLAlchemy's
    own (``started_at = v.at`` compares the stored text)."""
    if dialect.name == "postgresql":
        return datetime.isoformat
    return _sqlite_stamp(dialect)


@cache
def _sqlite_stamp(dialect: sa.Dialect) -> Callable[[datetime], str]:
    processor = runs.c.started_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None  # SQLAlchemy's SQLite DateTime stores text it formats itself
    return processor


@cache
def _statement(sql: str, schema: str | None) -> sa.TextClause:
    return sa.text(sql.format(runs=qualified(schema, "clock_runs"), totals=qualified(schema, "clock_run_totals")))
