"""The clock behind a real PgBouncer in transaction pooling (Heroku's connection pooling): one leader, leases
that neither leak nor double, no prepared-statement errors, every slot once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynoclock.state.lease import PostgresLease
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim
from tests.support.pgbouncer import Bouncer
from tests.support.processes import TICK_COMMAND, Clocks, _clocks, tick_slots, write_schedule

pytestmark = pytest.mark.postgres


@pytest.fixture
def bounced_ledger(bounced_db: str) -> Ledger:
    ledger = Ledger(bounced_db)
    ledger.ensure_schema()
    return ledger


def test_behind_pgbouncer_the_lease_has_one_holder_round_after_round(bounced_ledger: Ledger) -> None:
    a = PostgresLease(bounced_ledger.engine, "clock-a")
    b = PostgresLease(bounced_ledger.engine, "clock-b")
    try:
        assert a.try_acquire() is True
        for _ in range(20):  # each statement may land on another server connection: none of them holds anything
            assert b.try_acquire() is False
            assert a.still_held() is True
        a.release()
        assert b.try_acquire() is True
        assert a.try_acquire() is False
        assert b.still_held() is True
    finally:
        a.release()
        b.release()


def test_behind_pgbouncer_claims_never_trip_on_prepared_statements(bounced_db: str) -> None:
    # Three clocks' engines take turns on PgBouncer's two server connections: a statement psycopg prepared on one
    # of them (after 5 runs) meets another client's statement of the same name (PgBouncer 1.18 cannot keep them).
    ledgers = [Ledger(f"{bounced_db}?application_name=clock-{n}") for n in range(3)]
    ledgers[0].ensure_schema()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    won: set[str] = set()
    for n in range(30):
        for k, ledger in enumerate(ledgers):
            slot = start + timedelta(minutes=n, seconds=k)
            won |= ledger.claim_many([Claim(uuid.uuid4().hex, "tick", slot, f"clock-{k}")])
            ledger.heartbeat(f"clock-{k}", "standby", start)
    assert len(won) == 90
    assert len(ledgers[0].history(limit=1_000)) == 90


@pytest.fixture
def bounced_clocks(tmp_path: Path, bounced_db: str) -> Iterator[Clocks]:
    yield from _clocks(tmp_path, bounced_db)


def test_two_clocks_behind_pgbouncer_have_one_leader_and_run_each_slot_once(
    tmp_path: Path, bounced_clocks: Clocks, bounced_db: str, pgbouncer: Bouncer
) -> None:
    schedule = write_schedule(tmp_path, f"jobs:\n  tick:\n    every: 1s\n    {TICK_COMMAND}\n")
    first = bounced_clocks(schedule)
    first.wait_for("clock.leader")
    second = bounced_clocks(schedule)
    second.wait_for("clock.standby")
    first.wait_for("run.ok", count=3)
    assert second.events("clock.leader") == []
    assert first.stop() == 0  # a clean stop: the lease is released, the other leads at once
    second.wait_for("clock.leader")
    second.wait_for("run.ok", count=3)
    assert second.stop() == 0
    slots = tick_slots(tmp_path)
    assert len(slots) == len(set(slots)) >= 6, "a slot ran twice"
    rows = Ledger(bounced_db).history("tick", limit=1_000)
    assert {row.status for row in rows} <= {"ok", "skipped", "missed"}
    for clock in (first, second):
        assert "DuplicatePreparedStatement" not in clock.text() and "prepared statement" not in clock.text()
