"""Where the clock's tables live on Postgres: a schema of their own, made (and moved into) at start.

The tables are defined with no schema (state/tables.py). The state engine renders them in the clock's schema
through SQLAlchemy's ``schema_translate_map``: no connection's search_path is ever set (PgBouncer in transaction
pooling shares server sessions), and an app's own migrations, which compare the app's default schema, never see
them. The schema is ``$CLOCK_SCHEMA``, else the first schema of a search_path the state URL's ``options`` set
(the way several apps shared one database before) unless that is ``public``, else ``dynoclock``: never
``public``. Tables an older clock made where a connection lands by default (``current_schema()``, usually
``public``) are moved in, rows and all. SQLite has no schemas: nothing here applies to it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from dynoclock.state.engines import DatabaseUrlError
from dynoclock.state.tables import SCHEMA_LOCK, metadata

DEFAULT_SCHEMA = "dynoclock"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_SEARCH_PATH = re.compile(r"(?:^|\s)(?:-c\s*|--)search[_-]path=(\S+)")
_DENIED = "42501"  # SQLSTATE insufficient_privilege


class SchemaNameError(DatabaseUrlError):
    """CLOCK_SCHEMA (or the URL's search_path) names no schema the clock accepts."""


class SchemaDenied(RuntimeError):
    """The state database's role may not create or use the clock's schema: a setup to fix, not a network blip."""


@dataclass(frozen=True)
class Migrated:
    """Tables an older clock made in ``source``, moved with their rows into ``target``."""

    source: str
    target: str
    tables: int


def valid_name(name: str, where: str) -> str:
    if name == "public":
        raise SchemaNameError(
            f"{where} 'public': the clock's tables never go in public, where the app's own migrations would see them "
            "(and propose dropping them); choose another name, or leave CLOCK_SCHEMA unset for 'dynoclock'"
        )
    if _NAME.match(name) and not name.startswith("pg_"):
        return name
    raise SchemaNameError(
        f"{where} {name!r} is not a schema name the clock accepts: lowercase letters, digits and _, starting with a "
        "letter or _, at most 63 characters, not starting with pg_"
    )


def clock_schema(url: URL, env: Mapping[str, str] | None = None) -> str:
    """The schema of the clock's tables on the Postgres database ``url`` names."""
    env = os.environ if env is None else env
    configured = env.get("CLOCK_SCHEMA", "").strip()
    if configured:
        return valid_name(configured, "CLOCK_SCHEMA")
    options = url.query.get("options", ())
    for option in [options] if isinstance(options, str) else options:
        match = _SEARCH_PATH.search(option)
        if match:
            first = match.group(1).split(",")[0].strip()
            name = first[1:-1] if len(first) > 1 and first[0] == first[-1] == '"' else first.lower()
            if name == "public":  # the app's own schema, named: the clock's tables go to their own (and move there)
                return DEFAULT_SCHEMA
            return valid_name(name, "the first schema of the search_path in the state URL's options (set CLOCK_SCHEMA)")
    return DEFAULT_SCHEMA


def qualified(schema: str | None, table: str) -> str:
    """A table's name for hand-written SQL (the names are checked: quoting needs no escaping)."""
    return f'"{schema}".{table}' if schema else table


_TABLES = sa.text(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'i') AND c.relname = ANY(:names)"
)


def prepare(conn: Connection, schema: str) -> tuple[set[str], Migrated | None]:
    """Make the clock's schema and move an older clock's tables into it, in the caller's transaction (Postgres).

    Returns the names of the clock's tables and indexes in it now (the caller creates the others: a role with no
    CREATE right works on tables an owner made), and what was moved. Clocks
    starting at once take turns on an advisory lock held to the end of the transaction (no session state: this
    works behind PgBouncer), so the schema is made once and the tables moved once.
    """
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:s))"), {"k": SCHEMA_LOCK, "s": schema})
    role, legacy = conn.execute(sa.text("SELECT current_user, current_schema()")).one()
    rights = conn.execute(
        sa.text(
            "SELECT has_schema_privilege(oid, 'USAGE'), has_schema_privilege(oid, 'CREATE') "
            "FROM pg_namespace WHERE nspname = :s"
        ),
        {"s": schema},
    ).first()
    if rights is None:
        create_schema = f'CREATE SCHEMA IF NOT EXISTS "{schema}"'
        if not conn.execute(sa.text("SELECT has_database_privilege(current_database(), 'CREATE')")).scalar():
            raise SchemaDenied(_cannot_create(schema, role))
        _execute(conn, create_schema, _cannot_create(schema, role))
        usage = create = True
    else:
        usage, create = bool(rights[0]), bool(rights[1])
    if not usage:
        raise SchemaDenied(_cannot_use(schema, role, "USAGE, CREATE"))
    tables = [table.name for table in metadata.sorted_tables]
    names = tables + [index.name for table in metadata.sorted_tables for index in table.indexes if index.name]
    present = {name for (name,) in conn.execute(_TABLES, {"schema": schema, "names": names})}
    moving: list[str] = []
    if legacy and legacy != schema:
        found = {name for (name,) in conn.execute(_TABLES, {"schema": legacy, "names": tables})}
        if "clock_meta" in found:  # an older clock's tables (its schema version is there), not an app's namesakes
            moving = [name for name in tables if name in found and name not in present]
    if (moving or not present.issuperset(names)) and not create:
        raise SchemaDenied(_cannot_use(schema, role, "CREATE"))
    for name in moving:
        source = legacy.replace('"', '""')  # current_schema(), not a name the clock checked
        statement = f'ALTER TABLE "{source}".{name} SET SCHEMA "{schema}"'  # indexes and constraints go along
        _execute(
            conn,
            statement,
            f"cannot move the clock's table {name} from schema {legacy!r} to {schema!r}: permission denied for role "
            f"{role}; start the clock once with the tables' owner, or set CLOCK_SCHEMA={legacy}",
        )
    if moving:
        present = {name for (name,) in conn.execute(_TABLES, {"schema": schema, "names": names})}
    return present, (Migrated(legacy, schema, len(moving)) if moving else None)


def _execute(conn: Connection, statement: str, denied: str) -> None:
    try:
        conn.exec_driver_sql(statement)
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _DENIED:
            raise SchemaDenied(denied) from None
        raise


def _cannot_create(schema: str, role: str) -> str:
    return (
        f'cannot create schema "{schema}": permission denied; create it once as an owner: '
        f"CREATE SCHEMA {schema} AUTHORIZATION {role}; or set CLOCK_SCHEMA to a schema this role may use"
    )


def _cannot_use(schema: str, role: str, rights: str) -> str:
    return (
        f'cannot use schema "{schema}": permission denied for role {role}; as its owner: GRANT {rights} ON SCHEMA '
        f"{schema} TO {role}; or set CLOCK_SCHEMA to a schema this role may use"
    )
