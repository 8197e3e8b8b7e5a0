"""Run-row writes of many rows in one Postgres statement: the values go as arrays, joined with ``unnest``.

An ``executemany`` of one UPDATE per row costs a round trip and SQLAlchemy's and psycopg's per-row work for each:
in a burst of 1,000 runs that was most of the clock's CPU. With arrays the rows cost one statement. SQLite,
where a statement costs no round trip, keeps the per-row statements (state/ledger.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from dynoclock.state.schema import qualified
from dynoclock.state.tables import runs

MIN_ROWS = 4  # fewer rows go one statement each: Postgres plans a join with arrays slower than an update by key
_DIALECT: sa.Dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
_BEGIN = """
UPDATE {runs} AS r SET status = 'running', attempt = v.att, started_at = v.at, finished_at = NULL, error = NULL,
    duration_ms = NULL
FROM unnest(CAST(:rids AS text[]), CAST(:atts AS integer[]), CAST(:ats AS timestamp[])) AS v(rid, att, at)
WHERE r.run_id = v.rid AND r.clock = :me AND (r.status = 'claimed' OR (r.status = 'running' AND r.started_at = v.at))
RETURNING r.run_id
"""


def begin(conn: sa.Connection, schema: str | None, starts: Sequence[tuple[str, int, datetime]], clock: str) -> set[str]:
    """``Ledger.begin`` on Postgres: (run id, attempt, naive UTC instant) each; the run ids marked started."""
    ordered = sorted(starts)  # rows locked in run id order, as the per-row form did
    params = {
        "rids": [run_id for run_id, _, _ in ordered],
        "atts": [attempt for _, attempt, _ in ordered],
        "ats": [at for _, _, at in ordered],
        "me": clock,
    }
    return {run_id for (run_id,) in conn.execute(_statement(_BEGIN, schema), params)}


def update(conn: sa.Connection, schema: str | None, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    """``Ledger.update_runs`` on Postgres: the rows of one shape (their ``rid`` and ``columns``) in one statement."""
    rows = sorted(rows, key=lambda row: str(row["rid"]))
    params = {"rid": [row["rid"] for row in rows]} | {column: [row[column] for row in rows] for column in columns}
    conn.execute(_statement(_update_sql(columns), schema), params)


@cache
def _update_sql(columns: tuple[str, ...]) -> str:
    names = ("rid", *columns)
    arrays = ", ".join(f"CAST(:{name} AS {_array_type(name)})" for name in names)
    sets = ", ".join(f"{column} = v.{column}" for column in columns)
    return f"UPDATE {{runs}} AS r SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) WHERE r.run_id = v.rid"


@cache
def _array_type(name: str) -> str:
    column = runs.c["run_id" if name == "rid" else name]
    return f"{column.type.compile(dialect=_DIALECT)}[]"


@cache
def _statement(sql: str, schema: str | None) -> sa.TextClause:
    return sa.text(sql.format(runs=qualified(schema, "clock_runs")))
