"""The leader lease: exclusive, gone the moment its holder is, and per Postgres schema."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dynoclock.state import engines as db
from dynoclock.state.lease import Fence, FileLease, Lease, PostgresLease, make_lease
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import LeaseLost
from tests.support.postgres import admin_engine
from tests.support.processes import ROOT, wait_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
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
    a, b = make_lease(store, "clock-a"), make_lease(store, "clock-b")
    leases += [a, b]
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert a.still_held() is True
    assert b.still_held() is False
    a.release()
    assert a.still_held() is False
    assert b.try_acquire() is True
    assert a.try_acquire() is False


# ---- PostgresLease: a row with an expiry in the database's time --------------------------------


def lease_for(url: str, holder: str, ttl: float = 15.0) -> PostgresLease:
    ledger = Ledger(url)
    ledger.ensure_schema()
    return PostgresLease(ledger.engine, holder, ttl)


def lease_row(url: str) -> dict[str, object] | None:
    with Ledger(url).engine.connect() as conn:
        row = conn.execute(sa.text("SELECT holder, epoch, backend_pid FROM clock_lease")).first()
    return None if row is None else dict(row._mapping)


@pytest.mark.postgres
def test_a_dead_holders_lease_is_taken_over_at_once_without_waiting_for_its_expiry(
    pg_schema_url: str, leases: list[Lease]
) -> None:
    a, b = lease_for(pg_schema_url, "clock-a"), lease_for(pg_schema_url, "clock-b")
    leases += [a, b]
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    row = lease_row(pg_schema_url)
    assert row is not None and (row["holder"], row["epoch"]) == ("clock-a", 1)
    with admin_engine().connect() as conn:  # with a timeout, pg_terminate_backend waits until the backend is gone
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": row["backend_pid"]}).scalar()
    assert a.still_held() is False  # its connection is gone
    assert b.try_acquire() is True  # its holder's server process is gone: no need to wait 15 s
    assert lease_row(pg_schema_url) == {"holder": "clock-b", "epoch": 2, "backend_pid": b_pid(b)}
    assert a.try_acquire() is False  # a reconnects, and finds the lease taken


def b_pid(lease: PostgresLease) -> int:
    assert lease.conn is not None
    return int(lease.conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


@pytest.mark.postgres
def test_a_silent_holders_lease_is_taken_over_once_it_expires_and_its_claims_are_fenced(
    pg_schema_url: str, leases: list[Lease]
) -> None:
    # A holder that stops renewing (frozen, or its packets dropped) keeps a live server process: the lease waits
    # for its expiry, in the database's own time, and afterwards nothing the old holder claims commits.
    store = Ledger(pg_schema_url)
    a, b = lease_for(pg_schema_url, "clock-a", ttl=1.0), lease_for(pg_schema_url, "clock-b", ttl=1.0)
    leases += [a, b]
    assert a.try_acquire() is True
    stale = a.fence()
    assert stale == Fence("clock-a", 1)
    assert store.claim("before", "tick", T0, "clock-a", fence=stale) is True  # while it holds the lease
    assert b.try_acquire() is False
    wait_until(b.try_acquire, "the lease to expire")
    assert b.fence() == Fence("clock-b", 2)
    with pytest.raises(LeaseLost):
        store.claim("late", "tick", T0 + timedelta(minutes=1), "clock-a", fence=stale)
    assert a.still_held() is False  # its renewal finds the lease taken
    with pytest.raises(LeaseLost):
        store.claim("later", "tick", T0 + timedelta(minutes=2), "clock-a", fence=a.fence())
    assert store.claim("new", "tick", T0 + timedelta(minutes=1), "clock-b", fence=b.fence()) is True
    assert sorted(run.run_id for run in store.history()) == ["before", "new"]


@pytest.mark.postgres
def test_postgres_leases_in_different_schemas_do_not_exclude_each_other(
    pg_schemas: Callable[[], str], leases: list[Lease]
) -> None:
    one, two = pg_schemas(), pg_schemas()
    a, b, c = lease_for(one, "a"), lease_for(two, "b"), lease_for(one, "c")
    leases += [a, b, c]
    assert a.try_acquire() is True
    assert b.try_acquire() is True
    assert c.try_acquire() is False


def test_postgres_lease_raises_when_the_database_is_unreachable() -> None:
    lease = PostgresLease(db.engine_for("postgresql://postgres@127.0.0.1:1/x"), "clock-a")
    with pytest.raises(sa.exc.OperationalError):
        lease.try_acquire()
    assert lease.still_held() is False


def expiry(url: str) -> datetime:
    with Ledger(url).engine.connect() as conn:
        return conn.execute(sa.text("SELECT expires_at FROM clock_lease")).scalar_one()  # type: ignore[no-any-return]


@pytest.mark.postgres
def test_a_leader_round_renews_the_lease_in_its_statement_and_writes_nothing_once_it_is_taken(
    pg_schema_url: str, leases: list[Lease]
) -> None:
    store = Ledger(pg_schema_url)
    a, b = lease_for(pg_schema_url, "clock-a", ttl=1.0), lease_for(pg_schema_url, "clock-b", ttl=1.0)
    leases += [a, b]
    started = datetime.now(UTC) - timedelta(minutes=1)
    assert a.try_acquire() is True
    acquired = expiry(pg_schema_url)
    assert store.leader_round_renewing("clock-a", started, a) == (set(), False, False)
    assert expiry(pg_schema_url) > acquired  # renewed by the round
    (beat,) = store.clocks()
    led = store.led_until()
    assert (beat["clock"], beat["role"]) == ("clock-a", "leader") and led == beat["heartbeat_at"]
    with store.engine.begin() as conn:  # a silent holder: its lease expires, and b takes it
        conn.execute(sa.text("UPDATE clock_lease SET expires_at = now() - interval '1 second'"))
    assert b.try_acquire() is True
    assert store.leader_round_renewing("clock-a", started, a) is None
    assert a.fence() == Fence("clock-a", None)  # its claims no longer commit
    assert store.led_until() == led  # nothing written by the round that found the lease taken
    assert lease_row(pg_schema_url) == {"holder": "clock-b", "epoch": 2, "backend_pid": b_pid(b)}
