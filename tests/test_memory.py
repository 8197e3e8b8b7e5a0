"""What a clock process keeps in memory: only the database dialect and driver its state uses, a bounded SQLite page
cache, the partial index made all the same on either store, and one function reference for all APScheduler jobs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.blocking import BlockingScheduler

from dynoclock.config.loader import load_schedule
from dynoclock.daemon import process
from dynoclock.state.engines import SQLITE_CACHE_KIB, normalize_url
from dynoclock.state.ledger import Ledger
from tests.support.postgres import schema_of

REPO = Path(__file__).resolve().parent.parent
# What the running clock imports, then its state made ready, in a fresh interpreter: the modules it then holds.
MODULES_AFTER_START = """
import json, sys
from dynoclock.cli import main
from dynoclock.daemon import process
from dynoclock.state.ledger import Ledger
Ledger(sys.argv[1]).ensure_schema()
print(json.dumps(sorted(sys.modules)))
"""


def modules_of_a_clock_on(url: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER_START, url], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout))


def test_a_clock_on_sqlite_loads_no_postgres_dialect_or_driver(tmp_path: Path) -> None:
    modules = modules_of_a_clock_on(f"sqlite:///{tmp_path}/state.db")
    assert "sqlalchemy.dialects.sqlite" in modules
    assert [m for m in modules if m.startswith(("sqlalchemy.dialects.postgresql", "psycopg"))] == []


@pytest.mark.postgres
def test_a_clock_on_postgres_loads_no_sqlite(pg_schema_url: str) -> None:
    modules = modules_of_a_clock_on(pg_schema_url)
    assert "psycopg" in modules
    assert [m for m in modules if "sqlite" in m] == []


def test_the_partial_index_is_made_on_sqlite(tmp_path: Path) -> None:
    Ledger(f"sqlite:///{tmp_path}/state.db").ensure_schema()
    with closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'clock_jobs_unscheduled'").fetchone()
    assert sql == "CREATE INDEX clock_jobs_unscheduled ON clock_jobs (updated_at) WHERE next_fire_at IS NULL"


@pytest.mark.postgres
def test_the_partial_index_is_made_on_postgres(pg_schema_url: str) -> None:
    Ledger(pg_schema_url).ensure_schema()
    engine = sa.create_engine(normalize_url(pg_schema_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = :s AND indexname = 'clock_jobs_unscheduled'"
                ),
                {"s": schema_of(pg_schema_url)},
            ).scalar_one()
    finally:
        engine.dispose()
    assert found.endswith("(updated_at) WHERE (next_fire_at IS NULL)"), found


def test_the_state_sqlite_page_cache_is_bounded(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path}/state.db")
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB


def test_every_scheduler_job_shares_one_function_reference(write_schedule: Callable[[str], Path]) -> None:
    text = "jobs:\n  a:\n    every: 1h\n    command: ['true']\n  b:\n    cron: '0 4 * * *'\n    command: ['true']\n"
    schedule = load_schedule(str(write_schedule(text)))
    scheduler = BlockingScheduler(timezone=UTC)
    slots = process.SchedulerSlots(scheduler)
    for job in schedule.jobs.values():
        slots.put(job, datetime(2026, 1, 1, tzinfo=UTC))
    a, b = scheduler.get_job("a"), scheduler.get_job("b")
    assert a.func is b.func is process._unused
    assert a.func_ref is b.func_ref  # one string, not one per job
    assert a.func_ref == "dynoclock.daemon.process:_unused"
