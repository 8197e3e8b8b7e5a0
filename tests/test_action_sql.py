"""``sql:`` jobs against the real PostgreSQL and a real SQLite file."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from dynoclock.run.outcome import Outcome
from tests.support.http import Loopback
from tests.support.processes import wait_until
from tests.support.proxy import Proxy
from tests.support.runner import Harness, now_slot
from tests.support.state import forget_engine

Write = Callable[[str], Path]


@dataclass
class Database:
    """A database with a fresh table ``table`` (id integer, note text); ``query`` reads it directly."""

    url: str  # as a schedule would name it
    table: str
    query: Callable[[str], list[tuple[object, ...]]]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    table = unique("clock_sql")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, note text)")

        def query(sql: str) -> list[tuple[object, ...]]:
            return list(conn.execute(sql).fetchall())

        yield Database(postgres_url, table, query)
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "app.db"
    table = unique("clock_sql")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, note text)")

    def query(sql: str) -> list[tuple[object, ...]]:
        return list(conn.execute(sql).fetchall())

    yield Database(f"sqlite:///{path}", table, query)
    conn.close()


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> Database:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        db: Database = request.getfixturevalue("pg")
    else:
        db = request.getfixturevalue("lite")
    return db


def sql_job(database: str | None, statements: str, timeout: str = "30s") -> str:
    db_line = f"    database: {database}\n" if database else ""
    return f"jobs:\n  housekeeping:\n    every: 1h\n    timeout: {timeout}\n{db_line}    sql: {statements}\n"


def test_statements_report_rows_affected(write_schedule: Write, database: Database) -> None:
    t = database.table
    h = Harness.load(
        write_schedule(
            sql_job(
                database.url,
                f"""
      - INSERT INTO {t} (id, note) VALUES (1, 'a'), (2, 'b'), (3, 'c')
      - UPDATE {t} SET note = 'seen' WHERE id <= 2
      - DELETE FROM {t} WHERE id = 1""",
            )
        )
    )
    outcome = h.run("housekeeping")
    assert (outcome.status, outcome.detail) == ("ok", "rows=6")  # 3 inserted + 2 updated + 1 deleted
    assert database.query(f"SELECT id, note FROM {database.table} ORDER BY id") == [(2, "seen"), (3, "c")]
    [ok] = h.captured.of("run.ok", job="housekeeping")
    assert ok["detail"] == "rows=6"


def test_a_failing_statement_rolls_back_the_ones_before(write_schedule: Write, database: Database) -> None:
    t = database.table
    created = unique("clock_sql_new")
    h = Harness.load(
        write_schedule(
            sql_job(
                database.url,
                f"""
      - CREATE TABLE {created} (id integer)
      - INSERT INTO {t} (id, note) VALUES (1, 'first')
      - INSERT INTO {t} (id, note) VALUES (1, 'duplicate key')""",
            )
        )
    )
    outcome = h.run("housekeeping")
    assert outcome.status == "failed"
    assert outcome.error.startswith("sql failed:")
    assert "unique" in outcome.error.lower() or "duplicate" in outcome.error.lower()
    assert database.query(f"SELECT * FROM {t}") == []  # the first INSERT was rolled back
    if database.url.startswith("sqlite"):
        tables = database.query(f"SELECT name FROM sqlite_master WHERE name = '{created}'")
    else:
        tables = database.query(f"SELECT tablename FROM pg_tables WHERE tablename = '{created}'")
    assert tables == []  # and so was the CREATE TABLE


@pytest.mark.postgres
def test_heroku_postgres_scheme_is_translated(write_schedule: Write, pg: Database) -> None:
    heroku_url = pg.url.replace("postgresql://", "postgres://", 1)
    h = Harness.load(write_schedule(sql_job(heroku_url, f"INSERT INTO {pg.table} (id) VALUES (7)")))
    outcome = h.run("housekeeping")
    assert (outcome.status, outcome.detail) == ("ok", "rows=1")
    assert pg.query(f"SELECT id FROM {pg.table}") == [(7,)]


@pytest.mark.postgres
def test_database_url_from_the_environment(
    write_schedule: Write, pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg.url.replace("postgresql://", "postgres://", 1))
    h = Harness.load(write_schedule(sql_job(None, f"INSERT INTO {pg.table} (id) VALUES (8)")))
    assert h.run("housekeeping").status == "ok"
    assert pg.query(f"SELECT id FROM {pg.table}") == [(8,)]


def test_no_database_anywhere_fails_with_what_to_set(write_schedule: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    h = Harness.load(write_schedule(sql_job(None, "SELECT 1")))
    outcome = h.run("housekeeping")
    assert (outcome.status, outcome.error) == ("failed", "no database: set 'database:' on the job or DATABASE_URL")


@pytest.mark.postgres
def test_pg_sleep_past_the_timeout_is_cancelled_on_the_server(write_schedule: Write, postgres_url: str) -> None:
    marker = unique("hung")
    h = Harness.load(write_schedule(sql_job(postgres_url, f'"SELECT pg_sleep(60) AS {marker}"', timeout="1s")))
    outcome = h.run("housekeeping")
    assert (outcome.status, outcome.error) == ("timeout", "timeout=1s exceeded")
    assert h.captured.names(job="housekeeping") == ["run.start", "run.timeout"]
    # The server stopped the statement too: it is not left running in a pooled connection.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for _ in range(100):
            active = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            ).fetchone()
            if active == (0,):
                break
            time.sleep(0.05)
        assert active == (0,)


@pytest.mark.postgres
def test_a_cancelled_runs_connection_is_closed_not_pooled(write_schedule: Write, postgres_url: str) -> None:
    """Its cancel hook runs on a hook thread, maybe late: back in the pool, the connection could carry that cancel
    request to the next run's statement."""
    marker = unique("hung")
    h = Harness.load(write_schedule(sql_job(postgres_url, f'"SELECT pg_sleep(60) AS {marker}"', timeout="1s")))
    outcomes: list[Outcome] = []
    runner = threading.Thread(target=lambda: outcomes.append(h.run("housekeeping")), daemon=True)
    runner.start()
    wait_until(lambda: backends(postgres_url, marker), "the backends", timeout=30)
    [pid] = backends(postgres_url, marker)
    runner.join(60)
    assert [(o.status, o.error) for o in outcomes] == [("timeout", "timeout=1s exceeded")]
    wait_until(
        lambda: not backend_alive(postgres_url, pid), "the backends", timeout=30
    )  # its server process is gone: not pooled


def test_sqlite_long_query_past_the_timeout_ends_as_timeout(write_schedule: Write, lite: Database) -> None:
    endless = (
        '"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000000000) '
        'SELECT count(*) FROM n"'
    )
    h = Harness.load(write_schedule(sql_job(lite.url, endless, timeout="1s")))
    outcome = h.run("housekeeping")
    assert (outcome.status, outcome.error) == ("timeout", "timeout=1s exceeded")
    assert h.captured.names(job="housekeeping") == ["run.start", "run.timeout"]
    assert not h.captured.of("run.abandoned")  # the query itself was interrupted


def test_unreachable_database_fails_without_showing_the_password(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(sql_job("postgresql://user:hunter2pass@127.0.0.1:1/x", "SELECT 1")))
    outcome = h.run("housekeeping")
    assert outcome.status == "failed"
    assert outcome.error.startswith("cannot reach the database postgresql+psycopg://user:***@127.0.0.1:1/x")
    assert "hunter2pass" not in outcome.error


@pytest.mark.postgres
def test_a_cancel_that_cannot_reach_the_server_never_holds_other_jobs(
    write_schedule: Write, postgres_url: str, loopback: Loopback
) -> None:
    """The job's database goes silent mid-statement (a frozen TCP proxy): at the timeout, its cancel request waits
    for an answer that cannot come; meanwhile the other job, due after that timeout, starts and finishes."""
    marker = unique("silent")
    upstream = urlsplit(postgres_url)
    proxy = Proxy(upstream.hostname or "127.0.0.1", upstream.port or 5432).start()
    credentials = upstream.netloc.rpartition("@")[0]
    silent_url = upstream._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}".lstrip("@")).geturl()
    h = Harness.load(
        write_schedule(
            f"""
jobs:
  stuck:
    every: 1h
    timeout: 2s
    database: {silent_url}
    sql: "SELECT pg_sleep(60) AS {marker}"
  other:
    every: 1h
    http: {{url: "{loopback.url}/ok"}}
"""
        )
    )
    try:
        slot = now_slot()
        h.runner.submit("stuck", slot)
        h.runner.submit("other", slot + timedelta(seconds=4))  # due after the stuck run's timeout
        wait_until(lambda: len(backends(postgres_url, marker)) == 1, "the backends", timeout=30)
        proxy.freeze()  # from now on nothing passes: not the statement's end, not a cancel request
        wait_until(
            lambda: h.captured.of("run.ok", job="other"), "the runs", timeout=60, details=lambda: str(h.captured.events)
        )
        # The other job finished while the stuck run's cancel request was still waiting in the frozen proxy.
        assert [still_open(sock) for sock in proxy_clients(proxy)] == [True, True]  # the job's, then its cancel
        wait_until(
            lambda: h.captured.of("run.timeout", job="stuck"),
            "the runs",
            timeout=60,
            details=lambda: str(h.captured.events),
        )
        [timeout] = h.captured.of("run.timeout", job="stuck")
        assert timeout["error"] == "timeout=2s exceeded"
        # Its worker waits on the silent connection: written off and replaced, as a job stuck in C is.
        assert h.captured.names(job="stuck") == ["run.start", "run.abandoned", "run.timeout"]
    finally:
        proxy.thaw()
        proxy.cut()
        forget_engine(silent_url)


def backends(url: str, marker: str) -> list[int]:
    """The server processes running a statement that contains ``marker``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchall()
    return [int(row[0]) for row in rows]


def backend_alive(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is not None


def proxy_clients(proxy: Proxy) -> list[socket.socket]:
    """The proxy's client-side sockets, in the order the connections came (each is followed by its upstream)."""
    return proxy._sockets[::2]


def still_open(sock: socket.socket) -> bool:
    """False once the client closed its end (a peek finds the end of the stream)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True  # open, nothing sent
