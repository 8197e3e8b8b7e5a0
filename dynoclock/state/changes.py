"""The change counter of runtime jobs as the leader polls it: a read that costs next to nothing when nothing changed.

It is read on a connection of its own outside SQLAlchemy's transactions (Postgres: autocommit, so it works behind
PgBouncer in transaction pooling): one statement, no begin, no rollback. On SQLite the connection first asks
``PRAGMA data_version``, which moves only when another connection commits (a few microseconds, no page read): the
counter's row is read again only then. On Postgres a read may also send a probe on the jobs channel
(``pg_notify``, delivered at its commit), by which the leader learns that its ``LISTEN`` hears what other sessions
send (daemon/apijobs.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        try:
            if self._raw is None:
                raw = self._raw = self.ledger.engine.raw_connection()
                if self.ledger.is_postgres and raw.driver_connection is not None:
                    raw.driver_connection.autocommit = True
            cursor = self._raw.cursor()
            try:
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
