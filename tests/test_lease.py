"""The leader lease: exclusive, gone the moment its holder is, and per Postgres schema."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dynoclock.state import engines as db
from dynoclock.state.lease import LEASE_CLASS, FileLease, Lease, PostgresLease, make_lease
from dynoclock.state.ledger import Ledger
from tests.support.postgres import admin_engine, schema_of
from tests.support.processes import ROOT

HOLDER = """
import sys, time
from dynoclock.state.lease import FileLease
lease = FileLease(sys.argv[1])
print("held" if lease.try_acquire() else "busy", flush=True)
if sys.argv[2] == "hold":
    time.sleep(600)
"""


def lease_process(tmp_path: Path, path: Path, mode: str) -> subprocess.Popen[str]:
    """A real process that tries the FileLease at ``path``, prints held/busy, and holds it (``hold``) or exits."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def leases() -> Iterator[list[Lease]]:
    """Leases made by a test, released at teardown."""
    made: list[Lease] = []
    yield made
    for lease in made:
        lease.release()


# ---- FileLease (SQLite state) ----------------------------------------------------------------


def test_file_lease_is_exclusive_between_processes_and_free_once_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "state" / "clock.db.leader"
    holder = lease_process(tmp_path, path, "hold")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        contender = lease_process(tmp_path, path, "try")
        out, _ = contender.communicate(timeout=30)
        assert out.strip() == "busy"
        mine = FileLease(str(path))
        assert mine.try_acquire() is False

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert mine.try_acquire() is True  # the kernel released the flock with the process: no wait, no poll
        assert mine.still_held() is True
        after = lease_process(tmp_path, path, "try")
        out, _ = after.communicate(timeout=30)
        assert out.strip() == "busy"
        mine.release()
        assert mine.still_held() is False
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_file_lease_is_free_again_after_release(tmp_path: Path) -> None:
    path = str(tmp_path / "clock.db.leader")
    first, second = FileLease(path), FileLease(path)
    assert first.try_acquire() is True
    assert first.try_acquire() is True  # holding it already
    assert second.try_acquire() is False
    first.release()
    assert second.try_acquire() is True
    second.release()


# ---- either backend, as the clock makes it -----------------------------------------------------


def test_one_of_two_clocks_leads_and_the_other_after_release(store: Ledger, leases: list[Lease]) -> None:
    a, b = make_lease(store), make_lease(store)
    leases += [a, b]
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert a.still_held() is True
    assert b.still_held() is False
    a.release()
    assert a.still_held() is False
    assert b.try_acquire() is True
    assert a.try_acquire() is False


# ---- PostgresLease -------------------------------------------------------------------------


def lease_for(url: str) -> PostgresLease:
    return PostgresLease(db.engine_for(url))


def lease_backend(schema: str) -> list[int]:
    """Backends named 'dynoclock-lease' holding the lease of ``schema`` (its advisory lock)."""
    query = sa.text(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE a.application_name = 'dynoclock-lease' AND l.locktype = 'advisory' AND l.granted "
        "AND l.classid::bigint = :cls AND l.objid::bigint = (hashtext(:schema)::bigint & 4294967295)"
    )
    with admin_engine().connect() as conn:
        return [pid for (pid,) in conn.execute(query, {"cls": LEASE_CLASS, "schema": schema})]


@pytest.mark.postgres
def test_postgres_lease_is_lost_when_its_backend_is_terminated(pg_schema_url: str, leases: list[Lease]) -> None:
    a, b = lease_for(pg_schema_url), lease_for(pg_schema_url)
    leases += [a, b]
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    (pid,) = lease_backend(schema_of(pg_schema_url))
    with admin_engine().connect() as conn:  # with a timeout, pg_terminate_backend waits until the backend is gone
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar() is True
    assert a.still_held() is False
    assert b.try_acquire() is True
    assert lease_backend(schema_of(pg_schema_url)) != [pid]
    assert a.try_acquire() is False  # a reconnects, and finds the lease taken


@pytest.mark.postgres
def test_postgres_leases_in_different_schemas_do_not_exclude_each_other(
    pg_schemas: Callable[[], str], leases: list[Lease]
) -> None:
    one, two = pg_schemas(), pg_schemas()
    a, b, c = lease_for(one), lease_for(two), lease_for(one)
    leases += [a, b, c]
    assert a.try_acquire() is True
    assert b.try_acquire() is True
    assert c.try_acquire() is False
    assert len(lease_backend(schema_of(one))) == len(lease_backend(schema_of(two))) == 1


def test_postgres_lease_raises_when_the_database_is_unreachable() -> None:
    lease = PostgresLease(db.engine_for("postgresql://postgres@127.0.0.1:1/x"))
    with pytest.raises(sa.exc.OperationalError):
        lease.try_acquire()
    assert lease.still_held() is False
