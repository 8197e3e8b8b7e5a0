"""The change counter of runtime jobs as the leader polls it: a read that costs next to nothing when nothing changed.

It is read on a connection of its own outside SQLAlchemy's transactions (Postgres: autocommit, so it works behind
PgBouncer in transaction pooling): one statement, no begin, no rollback. On SQLite the connection first asks
``PRAGMA data_version``, which moves only when another connection commits (a few microseconds, no page read): the
counter's row is read again only then. On Postgres a read may also send a probe on the jobs channel
(``pg_notify``, delivered at its commit), by which the leader learns that its ``LISTEN`` hears what other sessions
send (daemon/apijobs.py).

On SQLite a read may also be *settled* (``read_settled``): made after taking the write lock for a moment
(``BEGIN IMMEDIATE``, then a rollback), so that it sees every commit whose frames the WAL had when the read began:
one still being written holds that lock until it is visible. A read woken by the WAL's change (daemon/apijobs.py)
then needs no second look later in case it came before the commit did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

SETTLE_WAIT_MS = 200  # SQLite: how long a settled read waits for a writer's lock before it gives up (read_settled)

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

    from dynoclock.state.ledger import Ledger


class Counter:
    def __init__(self, ledger: Ledger, table: str, key: str, channel: str):
        self.ledger = ledger
        self._raw: PoolProxiedConnection | None = None
        self._select = f"SELECT value FROM {table} WHERE key = '{key}'"
        self._probe = f"SELECT ({self._select}), pg_notify('{channel}', %s)"
        self._version: object = None  # SQLite: the data_version the last read of the row was made under
        self._value = 0

    def read(self, probe: str | None = None) -> int:
        """The counter's value; on Postgres ``probe``, if given, is sent on the jobs channel by the same statement."""
        value = self._read(probe)
        assert value is not None
        return value

    def read_settled(self, settled: Callable[[], object] = lambda: None) -> int | None:
        """SQLite: the counter's value read under the write lock (see the module's doc); None if another connection
        held that lock for longer than ``SETTLE_WAIT_MS`` (nothing read). ``settled`` is called once the lock is
        taken: what the WAL showed until then is visible to this read (the caller's watch is drained there)."""
        return self._read(None, settle=settled)

    def _read(self, probe: str | None, settle: Callable[[], object] | None = None) -> int | None:
        try:
            if self._raw is None:
                raw = self._raw = self.ledger.engine.raw_connection()
                if self.ledger.is_postgres and raw.driver_connection is not None:
                    raw.driver_connection.autocommit = True
                if not self.ledger.is_postgres:  # this connection's own lock wait: never back to the pool
                    raw.detach()
                    raw.cursor().execute(f"PRAGMA busy_timeout = {SETTLE_WAIT_MS}").close()
            cursor = self._raw.cursor()
            locked = False
            try:
                if settle is not None and not self.ledger.is_postgres:
                    import sqlite3  # loaded already: the state is on SQLite

                    try:
                        cursor.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc):
                            raise
                        return None  # a writer held on to the lock: the caller looks again later
                    locked = True
                    settle()
                version = None
                if not self.ledger.is_postgres:
                    cursor.execute("PRAGMA data_version")
                    (version,) = cursor.fetchone() or (None,)
                    if version == self._version:
                        return self._value  # no other connection committed since the last read
                if probe is not None and self.ledger.is_postgres:
                    cursor.execute(self._probe, (probe,))
                else:
                    cursor.execute(self._select)
                row = cursor.fetchone()
            finally:
                if locked:
                    self._raw.rollback()
                cursor.close()
        except Exception:
            self._version = None
            if self._raw is not None:
                self._raw.invalidate()
                self._raw = None
            raise
        self._value = 0 if row is None or row[0] is None else int(row[0])
        self._version = version
        return self._value
