"""Per-job counters of outcomes, durations and lateness, kept in ``clock_run_totals`` for the metrics.

They are added to in the same transaction as the row change they count (``Ledger.update_runs``, ``record``,
``interrupt``), so they are exact for what the ledger holds, and they never go down: pruning old history leaves
them alone. Each attempt's outcome counts once (a run retried after a failure counts the failed attempt and
the final one); lateness (start minus slot) counts first attempts only. Buckets are stored one row per bucket
(not cumulative); the reader adds them up, so a bound that changes in a later version folds into the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dynoclock.state import bulk
from dynoclock.state.tables import from_db, insert_for, run_totals, runs

if TYPE_CHECKING:
    from dynoclock.state.writer import RunUpdate

FINAL = ("ok", "failed", "timeout", "interrupted", "skipped", "missed")
# Seconds. Durations: from a quick HTTP call to an hour-long export. Lateness: a clock starts on its second.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 60, 300)
Increments = dict[tuple[str, str], int]


def bucket(value_ms: int, bounds: tuple[float, ...]) -> str:
    for bound in bounds:
        if value_ms <= bound * 1000:
            return f"{bound:g}"
    return "+Inf"


def count(
    into: Increments, job: str, status: str, duration_ms: int | None = None, lateness_ms: int | None = None
) -> None:
    """Add one attempt's outcome to ``into``."""
    into[(job, f"runs:{status}")] = into.get((job, f"runs:{status}"), 0) + 1
    if duration_ms is not None:
        key = (job, f"duration_le:{bucket(duration_ms, DURATION_BUCKETS)}")
        into[key] = into.get(key, 0) + 1
        into[(job, "duration_sum_ms")] = into.get((job, "duration_sum_ms"), 0) + duration_ms
    if lateness_ms is not None:
        lateness_ms = max(lateness_ms, 0)
        key = (job, f"lateness_le:{bucket(lateness_ms, LATENESS_BUCKETS)}")
        into[key] = into.get(key, 0) + 1
        into[(job, "lateness_sum_ms")] = into.get((job, "lateness_sum_ms"), 0) + lateness_ms


def finished_increments(conn: Connection, updates: Mapping[str, Mapping[str, object]]) -> Increments:
    """What a batch of row updates adds: the outcomes it writes, read against the rows as they are (an update
    that is already there, replayed after a commit whose reply was lost, adds nothing)."""
    ending = {rid: values for rid, values in updates.items() if values.get("status") in FINAL}
    into: Increments = {}
    if not ending:
        return into
    columns = (runs.c.run_id, runs.c.job, runs.c.status, runs.c.scheduled_for, runs.c.started_at,
               runs.c.finished_at, runs.c.attempt)  # fmt: skip
    for rid, job, status, slot, started, finished, attempt in conn.execute(
        sa.select(*columns).where(bulk.ids_in(runs.c.run_id, list(ending), conn.dialect))
    ):
        values = cast("RunUpdate", ending[rid])  # the columns of run updates, merged (state/writer.py)
        if status == values["status"] and finished is not None and finished == values.get("finished_at"):
            continue
        started = values.get("started_at", started)
        lateness = None
        if started is not None and values.get("attempt", attempt) == 1:
            lateness = int((_naive(started) - slot).total_seconds() * 1000)
        count(into, job, values["status"], values.get("duration_ms"), lateness)
    return into


def add(conn: Connection, into: Increments, schema: str | None) -> None:
    """Add the increments, in key order (two transactions adding to the same rows never deadlock); ``schema``:
    the clock's on Postgres (state/schema.py)."""
    if not into:
        return
    if len(into) >= bulk.MIN_ROWS:  # a burst of 1,000 jobs adds 5,000: one statement, not one each
        bulk.add_totals(conn, schema, [(job, series, n) for (job, series), n in sorted(into.items())])
        return
    stmt = insert_for(conn.dialect.name, run_totals)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job", "series"], set_={"value": run_totals.c.value + stmt.excluded.value}
    )
    conn.execute(stmt, [{"job": job, "series": series, "value": n} for (job, series), n in sorted(into.items())])


def read(conn: Connection) -> dict[str, dict[str, int]]:
    """Every job's counters: job -> series -> value."""
    out: dict[str, dict[str, int]] = {}
    for job, series, value in conn.execute(sa.select(run_totals.c.job, run_totals.c.series, run_totals.c.value)):
        out.setdefault(job, {})[series] = int(value)
    return out


def cumulative(series: Mapping[str, int], prefix: str, bounds: Iterable[float]) -> list[tuple[str, float]]:
    """Prometheus buckets (``le``, count at or below) from the stored per-bucket counts."""
    stored = {key[len(prefix) :]: n for key, n in series.items() if key.startswith(prefix)}
    out = []
    for bound in bounds:
        below = sum(n for le, n in stored.items() if le != "+Inf" and float(le) <= bound)
        out.append((f"{bound:g}", float(below)))
    out.append(("+Inf", float(sum(stored.values()))))
    return out


def _naive(moment: datetime) -> datetime:
    return from_db(moment).replace(tzinfo=None)
