"""What a clock process keeps in memory: only the database dialect and driver its state uses, a bounded SQLite page
cache, the partial index made all the same on either store, and one function reference for all APScheduler jobs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.blocking import BlockingScheduler

from dynoclock.config.compose import SCALAR, Node
from dynoclock.config.loader import load_schedule
from dynoclock.config.source import load
from dynoclock.daemon import process
from dynoclock.daemon.memory import fix_mmap_threshold
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


def test_jobs_with_the_same_action_share_one_and_arguments_keep_theirs(write_schedule: Callable[[str], Path]) -> None:
    text = (
        "jobs:\n"
        "  c1: {every: 1h, command: ['true']}\n  c2: {every: 2h, command: ['true']}\n"
        "  c3: {every: 1h, command: ['true'], env: {A: b}}\n  c4: {every: 1h, command: ['true'], cwd: /tmp}\n"
        "  p1: {every: 1h, python: 'tests.jobs_for_tests:echo_args'}\n"
        "  p2: {every: 3h, python: 'tests.jobs_for_tests:echo_args'}\n"
        "  p3: {every: 1h, python: 'tests.jobs_for_tests:echo_args', args: [1]}\n"
        "  p4: {every: 1h, python: 'tests.jobs_for_tests:echo_args', args: [true]}\n"
    )
    jobs = load_schedule(str(write_schedule(text))).jobs
    action = {job_id: job.action for job_id, job in jobs.items()}
    assert action["c1"] is action["c2"] and action["p1"] is action["p2"]
    assert action["c3"] is not action["c1"] and action["c4"] is not action["c1"]
    assert [a.env for a in (action["c1"], action["c3"])] == [{}, {"A": "b"}]  # type: ignore[union-attr]
    assert [a.cwd for a in (action["c1"], action["c4"])] == [None, "/tmp"]  # type: ignore[union-attr]
    assert [a.args for a in (action["p1"], action["p3"], action["p4"])] == [(), (1,), (True,)]  # type: ignore[union-attr]
    assert type(action["p4"].args[0]) is bool  # type: ignore[union-attr]


def test_the_files_texts_are_one_string_each_and_not_in_the_interpreters_table(
    write_schedule: Callable[[str], Path],
) -> None:
    job_id = f"job-{uuid.uuid4().hex}"  # a text no code of the process has
    text = f"jobs:\n  {job_id}: {{every: 1h, command: ['true']}}\n  other: {{every: 1h, command: ['true']}}\n"
    data = load(str(write_schedule(text)), write_schedule(text).read_bytes()).data
    assert isinstance(data, dict)
    first, second = data["jobs"][job_id], data["jobs"]["other"]
    assert first["every"] is second["every"]  # one string for the two
    # sys.intern's table never shrinks: the file's texts are shared through a dict of the load's own.
    key = next(k for k in data["jobs"] if k == job_id)
    assert sys.intern("".join(job_id)) is not key


def test_a_tree_node_is_served_from_other_pools_than_the_texts_that_outlive_it() -> None:
    def size_class(size: int) -> int:  # CPython's small-object allocator: 16-byte classes up to 512 bytes
        return (size + 15) // 16 * 16

    node = Node(SCALAR, "tag:yaml.org,2002:str", "value", 0)
    texts = {size_class(sys.getsizeof("x" * length)) for length in range(16, 31)}
    assert size_class(sys.getsizeof(node)) not in texts


def test_the_mmap_threshold_is_fixed_where_the_c_library_has_mallopt() -> None:
    calls: list[tuple[int, int]] = []

    class Glibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    class Musl:  # its mallopt exists and does nothing
        def mallopt(self, param: int, value: int) -> int:
            return 0

    assert fix_mmap_threshold(Glibc()) is True
    assert calls == [(-3, 128 * 1024)]  # M_MMAP_THRESHOLD: fixed at its default, it no longer moves up
    assert fix_mmap_threshold(Musl()) is False
    assert fix_mmap_threshold(object()) is False  # no mallopt at all


def glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


@pytest.mark.skipif(not glibc(), reason="Linux with glibc")
def test_the_mmap_threshold_is_fixed_in_this_process_on_glibc() -> None:
    assert fix_mmap_threshold() is True
