"""The leader's periodic round on the state database, as cheap as it can be: an idle clock's CPU is mostly these.

One round writes the leader's heartbeat (its ``clock_clocks`` row and ``led_until``) and reads the paused jobs,
whether a "run now" request waits, and whether any clock but this one has a run unfinished (only then has the
housekeeping anything to look at, daemon/housekeeping.py). It runs on a DBAPI connection the round keeps, in
statements written once: on Postgres one statement, autocommit, so one round trip (and one transaction, behind
PgBouncer in transaction pooling too), with no statement bounds of its own, as the lease's renewal, which a
leader's round carries in the same statement on the lease's connection (the lease's bound stops a leader whose
round hangs); on SQLite one transaction of four statements.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from dynoclock.observe.timefmt import iso_utc
from dynoclock.state.lease import RENEW_CTE
from dynoclock.state.schema import qualified
from dynoclock.state.tables import UNFINISHED, clocks, from_db, to_db

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

    from dynoclock.state.database import StateDatabase
    from dynoclock.state.lease import PostgresLease

_UNFINISHED = ", ".join(f"'{status}'" for status in UNFINISHED)
# With the lease's renewal (``RENEW_CTE``): the heartbeat is written only if the lease was renewed.
_PG = """
    WITH {renewed},
    beat AS (
        INSERT INTO {clocks} AS c (clock, role, started_at, heartbeat_at)
        SELECT %(clock)s, 'leader', %(started)s, %(now)s FROM renewed
        ON CONFLICT (clock) DO UPDATE SET role = 'leader', heartbeat_at = excluded.heartbeat_at RETURNING 1),
    led AS (
        INSERT INTO {meta} AS m (key, value) SELECT 'led_until', %(led)s FROM renewed
        ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING 1)
    SELECT (SELECT count(*) FROM renewed),
           ARRAY(SELECT job FROM {paused}),
           EXISTS (SELECT 1 FROM {requests} WHERE taken_at IS NULL),
           EXISTS (SELECT 1 FROM {runs} WHERE status IN ({unfinished}) AND clock <> %(clock)s),
           (SELECT count(*) FROM beat) + (SELECT count(*) FROM led)"""
_SQLITE = (
    "INSERT INTO clock_clocks (clock, role, started_at, heartbeat_at) VALUES (:clock, 'leader', :started, :now) "
    "ON CONFLICT (clock) DO UPDATE SET role = 'leader', heartbeat_at = excluded.heartbeat_at",
    "INSERT INTO clock_meta (key, value) VALUES ('led_until', :led) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    "SELECT job FROM clock_paused",
    "SELECT EXISTS (SELECT 1 FROM clock_requests WHERE taken_at IS NULL), "
    f"EXISTS (SELECT 1 FROM clock_runs WHERE status IN ({_UNFINISHED}) AND clock <> :clock)",
)


class LeaderRound:
    def __init__(self, db: StateDatabase):
        self.db = db
        self._raw: PoolProxiedConnection | None = None
        dialect = db.engine.dialect  # instants as SQLAlchemy stores them (SQLite: its own text)
        self._datetime = clocks.c.heartbeat_at.type.dialect_impl(dialect).bind_processor(dialect)
        names = {name: qualified(db.schema, f"clock_{name}") for name in ("clocks", "meta", "paused", "requests")}
        names |= {"runs": qualified(db.schema, "clock_runs"), "unfinished": _UNFINISHED}
        renewed = RENEW_CTE.format(lease=qualified(db.schema, "clock_lease"))
        self._pg = _PG.format(**names, renewed="renewed AS (SELECT 1)")
        self._pg_renewing = _PG.format(**names, renewed=renewed)

    def __call__(
        self, clock: str, started_at: datetime, lease: PostgresLease | None = None
    ) -> tuple[set[str], bool, bool] | None:
        """(paused jobs, a request waits, another clock has an unfinished run), the heartbeat written. ``lease``
        (Postgres): renewed by the same statement, on its connection; None if it was not (nothing written)."""
        now = to_db(self.db.clock.now())
        params: dict[str, Any] = {"clock": clock, "started": self._stored(to_db(started_at)), "now": self._stored(now),
                                  "led": iso_utc(from_db(now))}  # fmt: skip
        if lease is not None:
            row = lease.renew_with(self._pg_renewing, params)
            return None if row is None else (set(row[1]), bool(row[2]), bool(row[3]))
        try:
            raw = self._connection()
            cursor = raw.cursor()
            try:
                if self.db.is_postgres:
                    cursor.execute(self._pg, params)
                    row = cursor.fetchone()
                    assert row is not None
                    return set(row[1]), bool(row[2]), bool(row[3])
                beat, led, list_paused, flags = _SQLITE
                cursor.execute(beat, params)
                cursor.execute(led, params)
                paused = {job for (job,) in cursor.execute(list_paused).fetchall()}
                waiting, others = cursor.execute(flags, params).fetchone()
                raw.commit()
                return paused, bool(waiting), bool(others)
            finally:
                cursor.close()
        except Exception:
            self.close()
            raise

    def checkpoint(self) -> bool:
        """SQLite in the clock daemon: the WAL checkpointed on the round's connection if enough of it waits
        (state/checkpoint.py); True if it was."""
        checkpoints = self.db.checkpoints
        if checkpoints is None or not checkpoints.due():
            return False
        try:
            checkpoints.run(self._connection())
        except Exception:
            self.close()
            raise
        return True

    def _stored(self, value: datetime) -> object:
        return value if self._datetime is None else self._datetime(value)

    def _connection(self) -> PoolProxiedConnection:
        if self._raw is None:
            raw = self._raw = self.db.engine.raw_connection()
            if self.db.is_postgres and raw.driver_connection is not None:
                raw.driver_connection.autocommit = True
        return self._raw

    def close(self) -> None:
        """Drop the connection (after an error: the next round opens another)."""
        if self._raw is not None:
            try:
                self._raw.invalidate()
            finally:
                self._raw = None
