"""Database URLs and engines, shared by ``sql:`` jobs and the clock's own state.

SQLAlchemy gives one engine (a connection pool) per URL for Postgres, SQLite and
anything else it has a driver for. Heroku's ``postgres://`` scheme, which
SQLAlchemy refuses, is read as Postgres through psycopg 3.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from dynoclock.observe.redact import redact_url
from dynoclock.timesource import SYSTEM

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_CACHE_KIB = 512  # the state's SQLite page cache per connection (_sqlite_state_pragmas)
_engines: dict[tuple[str, bool], Engine] = {}
_lock = threading.Lock()


class DatabaseUrlError(ValueError):
    """A URL that names no usable database; the message never shows the password."""


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` -> ``postgresql+psycopg://`` (the driver we ship)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def engine_for(url: str, state: bool = False) -> Engine:
    """The pooled engine for ``url``, made once per process.

    The clock's own state gets an engine of its own (``state=True``), so a job holding connections
    never starves the ledger, and tuned for many short writes: no pre-ping round trip on each
    checkout (a dead connection fails one write, which is retried), and SQLite in WAL mode.
    """
    key = (normalize_url(url), state)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(key[0], state)
        return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def postgres_connect_args(role: str) -> dict[str, object]:
    """Every database call is bounded: connecting (10 s), and a connection whose packets are dropped without a
    reset (a half-open connection, which would otherwise block a call for the kernel's TCP timeout, minutes to
    hours) is found dead by TCP keepalives within about 11 s and by tcp_user_timeout within 10 s of unacknowledged
    data. No prepared statements: PgBouncer in transaction pooling (Heroku's connection pooling) cannot keep them
    (``DuplicatePreparedStatement "_pg3_0"``)."""
    return {
        "connect_timeout": 10, "application_name": f"dynoclock-{role}" if role != "state" else "dynoclock",
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        "tcp_user_timeout": 10_000, "prepare_threshold": None,
    }  # fmt: skip


def _create(url: str, state: bool) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise DatabaseUrlError(f"cannot read the database URL {redact_url(url)!r}") from None
    kwargs: dict[str, object] = {"pool_pre_ping": not state}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if state:
            kwargs["connect_args"] = {"timeout": 15}  # wait for another clock's write lock, not fail
    elif parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = postgres_connect_args("state" if state else "job")
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
    try:
        engine = sqlalchemy.create_engine(parsed, **kwargs)
    except Exception as exc:  # no driver for this scheme, bad options
        raise DatabaseUrlError(f"cannot use the database URL {redact_url(url)!r}: {exc}") from None
    if sqlite and state:
        event.listen(engine, "connect", _sqlite_state_pragmas)
    if state and parsed.get_backend_name() == "postgresql":
        event.listen(engine, "begin", _bound_transaction)
    return engine


# Bounds on the server's side for every transaction of the clock's own state: a statement, a wait for a lock, and
# a transaction whose client went silent (its locks would block the next leader's claims and housekeeping forever,
# a session lasting as long as the server keeps the connection). Set per transaction: PgBouncer in transaction
# pooling shares server sessions, so a session-wide SET would leak into other clients' sessions.
_BOUNDS = (
    "SELECT set_config('statement_timeout', '30s', true), set_config('lock_timeout', '15s', true), "
    "set_config('idle_in_transaction_session_timeout', '15s', true)"
)
# The transaction's start and its bounds in one round trip: psycopg would send its own BEGIN and wait for the
# answer before the bounds, one round trip more on every transaction (a run's claim and its record are one each).
# No parameters, so psycopg sends it as one simple query, which may hold several statements.
_BEGIN_BOUNDED = "BEGIN; " + _BOUNDS


def _bound_transaction(conn: Connection) -> None:
    """The "begin" event of the state's Postgres engine: BEGIN and the bounds, sent together.

    The driver's connection is put in autocommit, so that it sends no BEGIN of its own; from our BEGIN on, the
    server holds a transaction block, which the driver's ``commit()`` and ``rollback()`` end as usual (they look
    at the server's transaction status, not at the autocommit flag). A connection used with SQLAlchemy's
    ``AUTOCOMMIT`` isolation level gets no transaction and no bounds: each of its statements commits alone."""
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    raw = conn.connection.driver_connection
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None or pgconn.transaction_status != 0:  # not psycopg 3, or not idle (0: TransactionStatus.IDLE)
        conn.exec_driver_sql(_BOUNDS)
        return
    raw.autocommit = True  # type: ignore[union-attr]
    conn.exec_driver_sql(_BEGIN_BOUNDED)


def checkpoint_elsewhere(engine: Engine) -> None:
    """The state's SQLite engine in the clock daemon: no commit runs a checkpoint (state/checkpoint.py); the
    leader's round does. Connections made before are closed, to be made again with the pragma."""
    if not event.contains(engine, "connect", _no_autocheckpoint):
        event.listen(engine, "connect", _no_autocheckpoint)
        engine.dispose()


def _no_autocheckpoint(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    finally:
        cursor.close()


def _sqlite_state_pragmas(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    """WAL: readers never block the writer, and a commit is an append (synchronous=NORMAL keeps it
    durable across a process crash; only an OS crash may lose the last commits)."""
    import sqlite3  # here: a clock on Postgres need not load SQLite (1.5 MB)

    cursor = dbapi_connection.cursor()
    try:
        # WAL is a property of the file: set once. Switching needs a moment alone with the file, which two
        # clocks starting on a new database compete for, and the busy timeout does not cover: retry.
        for _ in range(100):
            try:
                if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                SYSTEM.sleep(0.05)
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A page cache of 512 KiB, not SQLite's 2 MB per connection: a first takeover's 10,000 published rows
        # filled the pool's connections' caches, which stayed allocated (3-4 MB of a 10,000-job clock's memory).
        # They kept little of use: in WAL mode a connection empties its cache whenever another one has written.
        # 512 KiB holds the pages a burst's 1,000 claims write in their one transaction.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    finally:
        cursor.close()
