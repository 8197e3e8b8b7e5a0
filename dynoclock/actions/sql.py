"""``sql:`` jobs: statements run in one transaction against the app's database."""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from dynoclock.actions.base import JobFailed, JobTimeout, RunContext
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_nonempty_str, show
from dynoclock.observe.redact import redact_url

if TYPE_CHECKING:
    import sqlite3

    import sqlalchemy.exc

JOB_KEYS: tuple[str, ...] = ("database",)
CANCEL_WAIT = 10.0  # seconds a cancel request may wait for a silent server; its statement_timeout still applies


@dataclass(frozen=True, slots=True)
class SqlAction:
    statements: tuple[str, ...]
    database: str | None  # None: $DATABASE_URL at run time

    def run(self, ctx: RunContext) -> str:
        """Run the statements in one transaction, bounded by the run's timeout; report rows affected."""

        import sqlalchemy.exc  # here, not at the top: check and next need no database driver

        from dynoclock.state import engines as db

        url = self.database or os.environ.get("DATABASE_URL")
        if not url:
            raise JobFailed("no database: set 'database:' on the job or DATABASE_URL")
        try:
            engine = db.engine_for(url)
        except db.DatabaseUrlError as exc:
            raise JobFailed(str(exc)) from None
        rows = 0
        try:
            with engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                canceller = _Canceller(raw) if db.is_postgres(engine) else None
                try:
                    with conn.begin():
                        if canceller is not None:
                            # Enforced by the server: a hung statement is cancelled there, not only abandoned here.
                            # Rounded up: the server's timeout never ends the statement before the run's deadline.
                            timeout_ms = max(1, math.ceil(ctx.remaining * 1000))
                            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                            ctx.on_cancel(canceller)
                        elif _sqlite_connection(raw):
                            # SQLite has no statement timeout: abort from its progress handler at the deadline.
                            raw.set_progress_handler(lambda: int(ctx.remaining <= 0 or ctx.cancelled.is_set()), 1000)
                            conn.exec_driver_sql(f"PRAGMA busy_timeout = {max(1, int(ctx.remaining * 1000))}")
                            # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE, so a
                            # leading CREATE or ALTER would commit on its own: open it ourselves.
                            if not raw.in_transaction:
                                conn.exec_driver_sql("BEGIN")
                        try:
                            for statement in self.statements:
                                result = conn.exec_driver_sql(statement)
                                rows += max(result.rowcount, 0)
                        finally:
                            if _sqlite_connection(raw):
                                raw.set_progress_handler(None, 0)
                finally:
                    if canceller is not None and canceller.done(ctx):
                        conn.invalidate()  # a cancel request may still be on its way: never pool this connection
        except sqlalchemy.exc.DBAPIError as exc:
            raise _failure(exc, ctx, url) from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise JobFailed(f"sql failed: {type(exc).__name__}: {exc}") from None
        return f"rows={rows}"

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        if not self.database and not env.get("DATABASE_URL"):
            return "no database: set 'database:' on the job, or DATABASE_URL"
        return None


def parse(report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> SqlAction | None:
    before = len(report.problems)
    statements = report.parse(path, value, as_statements)
    database = None
    if "database" in extras:
        raw, where = extras["database"]
        database = report.parse(where, raw, as_database_url)
    if statements is None or len(report.problems) > before:
        return None
    return SqlAction(statements, database)


def as_statements(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise Invalid("expected an SQL statement or a list of them, got an empty list")
    statements = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"expected an SQL statement (text), got {show(item)}")
        statements.append(item.strip())
    return tuple(statements)


def as_database_url(value: object) -> str:
    url = as_nonempty_str(value).strip()
    if "://" not in url:
        shown = "***@" + url.rsplit("@", 1)[1] if "@" in url else url  # user:password@host without a scheme
        raise Invalid(f"expected a database URL like postgres://user@host/db or sqlite:///app.db, got {shown!r}")
    return url


def _sqlite_connection(raw: object) -> TypeGuard[sqlite3.Connection]:
    """Whether ``raw`` is a sqlite3 connection; without the module loaded it cannot be one: a clock on Postgres
    need not load SQLite (1.5 MB of memory) for its ``sql:`` jobs."""
    module = sys.modules.get("sqlite3")
    return module is not None and isinstance(raw, module.Connection)


def _sqlite_error(exc: object) -> bool:
    """Whether ``exc`` is sqlite3's OperationalError (as ``_sqlite_connection``: not loaded, it is not one)."""
    module = sys.modules.get("sqlite3")
    return module is not None and isinstance(exc, module.OperationalError)


class _Canceller:
    """The cancel hook of one run's Postgres connection. It runs on a hook thread, maybe late: it asks the server
    to cancel only while the run still holds the connection, and a cancelled run's connection is closed, never
    pooled, so a cancel request still on its way cannot stop the next run's statement on it."""

    def __init__(self, raw: object):  # the DBAPI connection: psycopg 3's, psycopg2's, or another driver's
        self.raw = raw
        self._lock = threading.Lock()
        self._holding = True

    def __call__(self) -> None:
        with self._lock:
            if not self._holding:
                return
        if hasattr(self.raw, "cancel_safe"):  # psycopg 3: gives up after CANCEL_WAIT
            self.raw.cancel_safe(timeout=CANCEL_WAIT)
        elif hasattr(self.raw, "cancel"):
            self.raw.cancel()

    def done(self, ctx: RunContext) -> bool:
        """The run lets go of the connection; True if it was cancelled or ran out of time (close it). The server's
        statement_timeout may end a statement a moment before the watchdog cancels the run: that connection is
        closed too, whichever came first."""
        with self._lock:
            self._holding = False
        return ctx.cancelled.is_set() or ctx.remaining <= 0


def _failure(exc: sqlalchemy.exc.DBAPIError, ctx: RunContext, url: str) -> JobFailed:
    """The database's own complaint, first line only; a timeout in the schedule's words."""

    from dynoclock.state import engines as db

    orig = exc.orig
    name = type(orig).__name__
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else name
    if name in ("QueryCanceled", "QueryCanceledError") or (_sqlite_error(orig) and text == "interrupted"):
        return JobTimeout(ctx.timeout)
    if exc.connection_invalidated or (name == "OperationalError" and "connect" in text.lower()):
        return JobFailed(f"cannot reach the database {redact_url(db.normalize_url(url))}: {text}")
    return JobFailed(f"sql failed: {text}")
