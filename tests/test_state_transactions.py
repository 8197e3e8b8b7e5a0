"""The clock's transactions on Postgres: bounded on the server from their first round trip, the bounds ending with
them, one round trip fewer than the driver's own BEGIN would cost, and a failed or killed connection handled as
SQLAlchemy's own errors (state/engines.py ``_bound_transaction``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg import pq

from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import runs

pytestmark = pytest.mark.postgres

BOUNDS = {"statement_timeout": "30s", "lock_timeout": "15s", "idle_in_transaction_session_timeout": "15s"}
SLOT = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(name="ledger")
def ledger_fixture(pg_schema_url: str) -> Ledger:
    ledger = Ledger(pg_schema_url)
    ledger.ensure_schema()
    return ledger


def _driver(ledger: Ledger) -> Any:
    """The psycopg connection the pool hands out next (the pool holds one: the tests use one at a time)."""
    with ledger.engine.connect() as conn:
        return conn.connection.driver_connection


def _settings(conn: Any) -> dict[str, str]:
    return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in BOUNDS}


@pytest.fixture(name="traced")
def traced_fixture(ledger: Ledger, tmp_path: Path) -> Iterator[Callable[[], list[tuple[str, str, str]]]]:
    """libpq's protocol trace of the pool's connection; calling it ends the trace and gives each message the client
    sent (F) and got (B): (side, kind, text)."""
    raw = _driver(ledger)
    path = tmp_path / "trace.txt"
    out = path.open("w")
    raw.pgconn.trace(out.fileno())
    raw.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
    tracing = [True]

    def stop() -> list[tuple[str, str, str]]:
        if tracing:
            raw.pgconn.untrace()  # flushes libpq's buffer
            out.close()
            tracing.clear()
        messages = []
        for line in path.read_text().splitlines():
            side, _, kind, *text = line.split("\t")
            messages.append((side, kind, text[0].strip() if text else ""))
        return messages

    yield stop
    stop()


def test_a_claim_is_three_round_trips_and_bounded_from_the_first(
    ledger: Ledger, traced: Callable[[], list[tuple[str, str, str]]]
) -> None:
    assert ledger.claim(uuid.uuid4().hex, "tick", SLOT, "clock-a") is True
    messages = traced()
    # One round trip ends with each ReadyForQuery: BEGIN with the bounds, the INSERT, COMMIT. The driver's own
    # BEGIN would be one more, before the bounds.
    assert [kind for side, kind, _ in messages if side == "B" and kind == "ReadyForQuery"] == ["ReadyForQuery"] * 3
    sent = [(kind, text) for side, kind, text in messages if side == "F"]
    assert sent[0][0] == "Query" and sent[0][1].startswith('"BEGIN; SELECT set_config(')
    assert all(name in sent[0][1] for name in BOUNDS)
    assert sent[-1] == ("Query", '"COMMIT"')
    assert not any(text == '"BEGIN"' for _, text in sent)


def test_the_bounds_hold_in_a_transaction_and_never_outlive_it(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        inside = {name: conn.exec_driver_sql(f"SHOW {name}").scalar() for name in BOUNDS}
        raw = conn.connection.driver_connection
    assert inside == BOUNDS
    # The session, outside any transaction, keeps the server's settings: behind PgBouncer in transaction pooling
    # another client gets this server connection next.
    assert raw is not None and raw.pgconn.transaction_status == 0  # idle: the transaction ended
    outside = _settings(raw)
    assert outside != BOUNDS and outside["statement_timeout"] == "0"
    # And the next transaction on that connection is bounded again.
    with ledger.engine.connect() as conn:
        assert conn.connection.driver_connection is raw
        assert {name: conn.exec_driver_sql(f"SHOW {name}").scalar() for name in BOUNDS} == BOUNDS


def test_an_autocommit_connection_opens_no_transaction(ledger: Ledger) -> None:
    table = f"scratch_{uuid.uuid4().hex[:8]}"
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (n int)")
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1)")
        # Committed at once: another session sees the row while this connection is still open.
        other = sa.create_engine(ledger.engine.url, poolclass=sa.pool.NullPool)
        try:
            with other.connect() as second:
                assert second.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 1
        finally:
            other.dispose()
        raw = conn.connection.driver_connection
        assert raw is not None and raw.pgconn.transaction_status == 0  # idle: no transaction was opened


def test_a_failed_statement_rolls_back_and_the_connection_serves_the_next_claim(ledger: Ledger) -> None:
    with pytest.raises(sa.exc.ProgrammingError), ledger.engine.begin() as conn:
        conn.execute(runs.insert().values(run_id="x", job="tick", scheduled_for=SLOT, claimed_at=SLOT,
                                          status="claimed", clock="clock-a"))  # fmt: skip
        conn.exec_driver_sql("SELECT no_such_column FROM clock_runs")  # the transaction fails: the row goes
    raw = _driver(ledger)
    assert raw.pgconn.transaction_status == 0
    assert ledger.claim(uuid.uuid4().hex, "tick", SLOT, "clock-a") is True
    assert len(ledger.history(limit=10)) == 1


def test_a_killed_connection_fails_one_claim_as_sqlalchemys_error_and_is_replaced(
    ledger: Ledger, pg_admin: sa.Engine
) -> None:
    assert ledger.claim(uuid.uuid4().hex, "tick", SLOT, "clock-a") is True
    raw = _driver(ledger)
    with pg_admin.connect() as admin:
        assert admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": raw.info.backend_pid}).scalar()
    with pytest.raises(sa.exc.OperationalError) as failed:  # wrapped: callers and the pool see a disconnect
        ledger.claim(uuid.uuid4().hex, "tick", SLOT.replace(minute=1), "clock-a")
    assert failed.value.connection_invalidated is True
    assert ledger.claim(uuid.uuid4().hex, "tick", SLOT.replace(minute=2), "clock-a") is True
    assert _driver(ledger) is not raw
