"""The benchmarks' state databases: a fresh SQLite file or Postgres schema per clock run, and its ledger read back."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_PG


@dataclass
class Store:
    """A fresh state database for one clock run: an SQLite file or a Postgres schema of its own."""

    kind: str  # sqlite | postgres
    url: str


@contextlib.contextmanager
def fresh_store(kind: str, workdir: Path, pg_url: str = DEFAULT_PG) -> Iterator[Store]:
    """An empty state database; a Postgres schema ``bench_<random>`` is dropped afterwards."""
    if kind == "sqlite":
        path = workdir / f"state-{uuid.uuid4().hex[:8]}.db"
        yield Store("sqlite", f"sqlite:///{path}")
        return
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_psycopg(pg_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in pg_url else "?"
        yield Store("postgres", f"{pg_url}{sep}options=-csearch_path%3D{schema}")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def commit_latency(url: str, duration: float, every: float = 0.05) -> list[float]:
    """Milliseconds per one-row INSERT committed alone (autocommit), one every ``every`` s for ``duration`` s, on the
    store at ``url``: on Postgres a commit waits for its WAL to reach the disk (fsync), which is the floor of a
    run's start write, made durable before the run starts."""
    import sqlalchemy as sa

    engine = sa.create_engine(_psycopg(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    out: list[float] = []
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE bench_commit_probe (id serial PRIMARY KEY, at timestamptz)")
            end = time.monotonic() + duration
            while time.monotonic() < end:
                start = time.perf_counter()
                conn.exec_driver_sql("INSERT INTO bench_commit_probe (at) VALUES (now())")
                out.append((time.perf_counter() - start) * 1000)
                time.sleep(every)
            conn.exec_driver_sql("DROP TABLE bench_commit_probe")
    finally:
        engine.dispose()
    return out


def _psycopg(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def postgres_version(pg_url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(_psycopg(pg_url))
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        engine.dispose()


def ledger_rows(url: str) -> list[dict[str, Any]]:
    """Every row of clock_runs, through the product's own table definition."""
    import sqlalchemy as sa

    from dynoclock.state.ledger import Ledger
    from dynoclock.state.tables import runs

    ledger = Ledger(url)
    try:
        with ledger.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(runs))]
    finally:
        ledger.engine.dispose()
