"""The leader lease: one clock claims and runs slots, the others stand by.

Postgres: a session-level advisory lock on a connection of its own. It goes
the moment that connection does (the process died, or the server dropped it),
so a standby takes over within its poll interval. SQLite: an exclusive
``flock`` on a file beside the database, which the kernel releases when the
holder dies (kill -9 included); two processes on one machine respect it.

The lease keeps duplicates rare; the ledger's unique claim is what forbids them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from dynoclock.state.location import DEFAULT_SQLITE

if TYPE_CHECKING:
    from dynoclock.state.ledger import Ledger

LEASE_CLASS = 0x636C6F63  # first half of the advisory lock key; the second is the tables' schema, so that
# clocks of different apps keeping state in different schemas of one database do not share a lease


class Lease(Protocol):
    def try_acquire(self) -> bool:
        """Take the lease if it is free; True if this clock holds it now."""
        ...

    def still_held(self) -> bool:
        """Check (with a round trip where there is one) that the lease was not lost."""
        ...

    def release(self) -> None:
        """Give the lease up at once (at shutdown), so a standby can take over."""
        ...


_LOCK = sa.text("SELECT pg_try_advisory_lock(:cls, hashtext(current_schema()))")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:cls, hashtext(current_schema()))")


class PostgresLease:
    def __init__(self, engine: Engine):
        # Its own engine without a pool: the lock lives and dies with exactly this connection.
        self.engine = sa.create_engine(
            engine.url, poolclass=NullPool, connect_args={"connect_timeout": 5, "application_name": "dynoclock-lease"}
        )
        self.conn: Connection | None = None
        self.held = False

    def try_acquire(self) -> bool:
        if self.conn is None:
            # Autocommit: the lock is the session's, and no BEGIN/COMMIT round trips are needed around it.
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(self.conn.execute(_LOCK, {"cls": LEASE_CLASS}).scalar())
        except Exception:
            self._drop()
            raise
        self.held = self.held or got
        return got

    def still_held(self) -> bool:
        if self.conn is None or not self.held:
            return False
        try:
            # A session-level advisory lock lasts as long as its session: a live connection still holds it.
            self.conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            self._drop()
            return False

    def release(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(Exception):
            self.conn.execute(_UNLOCK, {"cls": LEASE_CLASS})
        self._drop()

    def _drop(self) -> None:
        self.held = False
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.invalidate()
                self.conn.close()
        self.conn = None


class FileLease:
    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        if self.fd is not None:
            return True
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def still_held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def make_lease(ledger: Ledger) -> Lease:
    if ledger.is_postgres:
        return PostgresLease(ledger.engine)
    return FileLease(f"{ledger.sqlite_path or DEFAULT_SQLITE.removeprefix('sqlite:///')}.leader")
