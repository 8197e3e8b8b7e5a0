"""The leader lease: one clock claims and runs slots, the others stand by.

Postgres: a row with an expiry in the database's time (``PostgresLease``), which
works on a direct connection and behind PgBouncer alike; a standby takes over
when it expires, or within its poll interval when the holder's server process
is gone. SQLite: an exclusive ``flock`` on a file beside the database, which
the kernel releases when the holder dies (kill -9 included); two processes on
one machine respect it.

The lease keeps duplicates rare; the ledger's unique claim is what forbids them,
and on Postgres every claim is also fenced by the lease's epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from dynoclock.state.engines import postgres_connect_args
from dynoclock.state.location import DEFAULT_SQLITE
from dynoclock.state.schema import qualified

if TYPE_CHECKING:
    from dynoclock.state.ledger import Ledger


class Lease(Protocol):
    @property
    def ttl(self) -> float | None:
        """Seconds the lease lasts without renewal (None: as long as this process holds it)."""
        ...

    def try_acquire(self) -> bool:
        """Take the lease if it is free; True if this clock holds it now."""
        ...

    def still_held(self) -> bool:
        """Check (with a round trip where there is one) that the lease was not lost."""
        ...

    def release(self) -> None:
        """Give the lease up at once (at shutdown), so a standby can take over."""
        ...

    def fence(self) -> Fence | None:
        """What a claim made now must still find in the database to commit (None: nothing to check)."""
        ...


LEASE_TTL = 15.0  # seconds a Postgres lease lasts without renewal (the leader renews every 5 s)
_HOLDER_GONE = """NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                               WHERE a.pid = l.backend_pid AND a.backend_start = l.backend_start)"""
_ME = "pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
_ACQUIRE = f"""
    INSERT INTO {{lease}} AS l (name, holder, epoch, expires_at, backend_pid, backend_start)
    VALUES ('leader', :holder, 1, now() + make_interval(secs => :ttl), {_ME})
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at,
                                     backend_pid = excluded.backend_pid, backend_start = excluded.backend_start
    WHERE l.expires_at <= now() OR l.holder = excluded.holder OR {_HOLDER_GONE}
    RETURNING l.epoch"""
_RENEW = f"""
    UPDATE {{lease}} SET expires_at = now() + make_interval(secs => :ttl), (backend_pid, backend_start) = ({_ME})
    WHERE name = 'leader' AND holder = :holder AND epoch = :epoch AND expires_at > now()
    RETURNING epoch"""
# The renewal as a CTE of a larger statement (state/round.py), in the driver's parameter style.
RENEW_CTE = f"""renewed AS (
    UPDATE {{lease}} SET expires_at = now() + make_interval(secs => %(ttl)s), (backend_pid, backend_start) = ({_ME})
    WHERE name = 'leader' AND holder = %(holder)s AND epoch = %(epoch)s AND expires_at > now()
    RETURNING epoch)"""
_RELEASE = """
    UPDATE {lease} SET expires_at = now() - interval '1 second'
    WHERE name = 'leader' AND holder = :holder AND epoch = :epoch"""


@dataclass(frozen=True)
class Fence:
    """Who holds the lease, and since which takeover: a claim made under it commits only while it still holds."""

    holder: str
    epoch: int | None  # None: this clock does not hold the lease now, so its claims must not commit


class PostgresLease:
    """A row (``clock_lease``) with an expiry in the database's own time, renewed by the leader, taken over by a
    standby once it expires, or at once when the holder's server process is gone (the holder died: a direct
    connection's backend ends with its process). Every step is one statement in its own transaction, so it works
    behind PgBouncer in transaction pooling, where a session advisory lock lands on whichever server connection
    the pooler picks. The epoch, raised at each takeover, fences claims (``Ledger.claim_many``)."""

    def __init__(self, engine: Engine, holder: str, ttl: float = LEASE_TTL):
        # A connection of its own, so that the holder's server process tells a standby whether it is alive.
        self.engine = sa.create_engine(engine.url, poolclass=NullPool, connect_args=postgres_connect_args("lease"))
        # The clock's schema, as the ledger's engine renders the tables (state/schema.py); none: the search_path's.
        schema = engine.get_execution_options().get("schema_translate_map", {}).get(None)
        lease = qualified(schema, "clock_lease")
        self._acquire, self._renew, self._release = (
            sa.text(sql.format(lease=lease)) for sql in (_ACQUIRE, _RENEW, _RELEASE)
        )
        self.holder = holder
        self.ttl = ttl
        self.conn: Connection | None = None
        self.epoch: int | None = None

    def try_acquire(self) -> bool:
        try:
            row = self._connect().execute(self._acquire, {"holder": self.holder, "ttl": self.ttl}).first()
        except Exception:
            self._drop()
            raise
        self.epoch = None if row is None else int(row[0])
        return self.epoch is not None

    def still_held(self) -> bool:
        """Renew the lease; False if it expired or another clock took it over (or the database is away)."""
        if self.conn is None or self.epoch is None:
            return False
        try:
            renewed = self.conn.execute(self._renew, self._mine() | {"ttl": self.ttl}).first() is not None
        except Exception:
            self._drop()
            return False
        if not renewed:
            self.epoch = None
        return renewed

    def renew_with(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Renew the lease in ``sql``, one statement on the lease's connection (a CTE ``renewed`` built on
        ``RENEW_CTE``, whose row count comes first in the one row it returns), with whatever else it does on the
        same round trip: that row, or None when the lease was not renewed (as ``still_held`` would say False)."""
        if self.conn is None or self.epoch is None:
            return None
        try:
            cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, {**params, **self._mine(), "ttl": self.ttl})
                row = cursor.fetchone()
            finally:
                cursor.close()
        except Exception:
            self._drop()
            return None
        if row is None or not row[0]:
            self.epoch = None
            return None
        return tuple(row)

    def release(self) -> None:
        if self.conn is not None and self.epoch is not None:
            with contextlib.suppress(Exception):
                self.conn.execute(self._release, self._mine())
        self._drop()

    def fence(self) -> Fence | None:
        return Fence(self.holder, self.epoch)

    def _mine(self) -> dict[str, object]:
        return {"holder": self.holder, "epoch": self.epoch}

    def _connect(self) -> Connection:
        if self.conn is None:
            # Autocommit: each statement is its own transaction, with no BEGIN/COMMIT round trips around it.
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.conn

    def _drop(self) -> None:
        self.epoch = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.invalidate()
                self.conn.close()
        self.conn = None


class FileLease:
    ttl = None

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

    def fence(self) -> Fence | None:
        return None  # two clocks on one SQLite file share a machine: the flock cannot be lost while held

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def make_lease(ledger: Ledger, holder: str) -> Lease:
    if ledger.is_postgres:
        return PostgresLease(ledger.engine, holder)
    return FileLease(f"{ledger.sqlite_path or DEFAULT_SQLITE.removeprefix('sqlite:///')}.leader")
