"""The clock's state database: its engine, its transactions, and its tables created and migrated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dynoclock.observe.redact import redact_url
from dynoclock.state import engines as db
from dynoclock.state.checkpoint import WalCheckpoints
from dynoclock.state.runs import SchemaTooNew
from dynoclock.state.schema import Migrated, clock_schema, prepare, valid_name
from dynoclock.state.tables import MIGRATIONS, SCHEMA_VERSION, insert_for, meta, metadata, partial_indexes
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

    Insert = postgresql.Insert | sqlite.Insert


class StateDatabase:
    """The clock's state database: one engine (on Postgres, every table in the clock's schema), transactions,
    and the tables created or migrated by ``ensure_schema``. ``Ledger`` (state/ledger.py) builds on it."""

    def __init__(self, url: str, clock: Clock = SYSTEM, schema: str | None = None):
        """``schema``: where the tables live on Postgres (default: ``state/schema.py``'s ``clock_schema``)."""
        self.url = url
        self.clock = clock  # the timestamps it writes (claimed_at, finished_at, heartbeats)
        engine = db.engine_for(url, state=True)
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise db.DatabaseUrlError(f"the clock's state needs Postgres or SQLite, not {engine.dialect.name}")
        self.is_postgres = db.is_postgres(engine)
        self.schema: str | None = None  # SQLite: none
        if self.is_postgres:
            self.schema = clock_schema(engine.url) if schema is None else valid_name(schema, "schema")
            # Every statement built from state/tables.py names the schema; no connection's search_path is set.
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.engine = engine
        self.checkpoints: WalCheckpoints | None = None  # SQLite, the daemon's leader's: checkpoint_in_rounds

    @property
    def location(self) -> str:
        """The state URL with any password masked, for logs."""
        return redact_url(self.url)

    @property
    def sqlite_path(self) -> str | None:
        return None if self.is_postgres else self.engine.url.database

    def checkpoint_in_rounds(self) -> None:
        """SQLite, in the clock daemon: its commits run no checkpoint of the WAL; the leader's rounds do
        (state/checkpoint.py). Postgres: nothing to do."""
        path = self.sqlite_path
        if path and path != ":memory:" and not path.startswith("file:") and self.checkpoints is None:
            db.checkpoint_elsewhere(self.engine)
            self.checkpoints = WalCheckpoints(path, self.clock)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- schema ----------------------------------------------------------------------------

    def ensure_schema(self) -> Migrated | None:
        """Create or migrate the tables; safe when several clocks start at once on an empty database.

        On Postgres, first the clock's schema, and the tables an older clock left where connections land by
        default moved into it (returned, for the caller to log). Raises ``SchemaDenied`` when the role may not."""
        migrated, present = None, None
        with self._tx() as conn:
            if self.is_postgres:  # serialized: CREATE TABLE IF NOT EXISTS still races on Postgres (pg_type)
                assert self.schema is not None
                present, migrated = prepare(conn, self.schema)
            partial_indexes(conn.dialect.name)
            for table in metadata.sorted_tables:
                if present is None or table.name not in present:
                    conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    if present is None or index.name not in present:
                        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            version = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if version is not None and int(version) > SCHEMA_VERSION:
                raise SchemaTooNew(f"the state database has schema {version}, newer than this clock's {SCHEMA_VERSION}")
            if version is not None:
                if self.is_postgres:  # hand-written migrations name tables bare: find them, for this transaction only
                    conn.execute(sa.text("SELECT set_config('search_path', :s, true)"), {"s": f'"{self.schema}"'})
                for step in range(int(version) + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS.get(step, []):
                        conn.exec_driver_sql(statement)
            if version is None or int(version) < SCHEMA_VERSION:
                self._upsert_meta(conn, "schema_version", str(SCHEMA_VERSION))
        return migrated

    def _upsert_meta(self, conn: Connection, key: str, value: str) -> None:
        stmt = self._insert(meta).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

    def _insert(self, table: sa.Table) -> Insert:
        return insert_for(self.engine.dialect.name, table)
