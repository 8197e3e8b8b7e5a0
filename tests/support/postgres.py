"""The machine's PostgreSQL for the tests: the server's URL, and a fresh schema per test (every connection's
search_path is that schema), dropped at teardown; and finding a clock process's own backends to kill them.

Unreachable: the tests that need it are skipped, or fail under CI=true (``services.unavailable``).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from tests.support.services import unavailable
from tests.support.state import forget_engine

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def admin_engine() -> sa.Engine:
    """An engine on the server (no schema of a test) for admin work: autocommit, no pool."""
    from dynoclock.state.engines import normalize_url

    return sa.create_engine(normalize_url(POSTGRES_URL), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session", name="pg_admin")
def pg_admin_fixture() -> sa.Engine:
    """The admin engine, once the server answered."""
    engine = admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # no driver, refused, bad credentials: all mean "no Postgres here"
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())  # psycopg's message spans lines
        unavailable("PostgreSQL", f"unreachable at {POSTGRES_URL} (set TEST_POSTGRES_URL): {cause}")
    return engine


@pytest.fixture(scope="session", name="postgres_url")
def postgres_url_fixture(pg_admin: sa.Engine) -> str:
    """The server's URL (its default schema), once it answered: for tests that make their own tables."""
    return POSTGRES_URL


def schema_url(schema: str, url: str = POSTGRES_URL) -> str:
    """The state URL of one schema: every connection's search_path is that schema, and so the clock's tables are
    there too (with CLOCK_SCHEMA unset, the URL's search_path names the clock's schema: state/schema.py)."""
    return f"{url}?options=-csearch_path%3D{schema}"


def schema_of(url: str) -> str:
    """The schema a ``schema_url`` names."""
    match = re.search(r"search_path%3D(\w+)", url)
    assert match, url
    return match.group(1)


def drop_schema(engine: sa.Engine, schema: str) -> None:
    """DROP SCHEMA ... CASCADE, first ending sessions that still hold locks on its tables. A test's clock may
    still write its history (the writer waits while runs start, up to 0.5 s): a write that begins between the
    two can deadlock with the DROP, which Postgres then cancels; it is tried again."""
    for attempt in range(5):
        try:
            with engine.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s "
                        "AND l.pid <> pg_backend_pid()"
                    ),
                    {"s": schema},
                )
                conn.execute(sa.text("SET lock_timeout = '20s'"))
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            return
        except sa.exc.OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 4:
                raise


@pytest.fixture(name="pg_schemas")
def pg_schemas_fixture(pg_admin: sa.Engine) -> Iterator[Callable[[], str]]:
    """Make fresh schemas (``test_<random>``) and return their URLs; all are dropped at teardown."""
    made: list[str] = []

    def make() -> str:
        schema = f"test_{uuid.uuid4().hex[:12]}"
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        made.append(schema)
        return schema_url(schema)

    yield make
    for schema in made:
        forget_engine(schema_url(schema))
        drop_schema(pg_admin, schema)


@pytest.fixture(name="pg_schema_url")
def pg_schema_url_fixture(pg_schemas: Callable[[], str]) -> str:
    """A state URL on a fresh Postgres schema of this test's own."""
    return pg_schemas()


def database_url(name: str, url: str = POSTGRES_URL) -> str:
    """The URL of database ``name`` on the server ``url`` names."""
    return f"{url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(name="pg_database")
def pg_database_fixture(pg_admin: sa.Engine) -> Iterator[str]:
    """The URL of a fresh database of this test's own, dropped at teardown: for what a schema of the shared one
    cannot show (the clock's own ``dynoclock`` schema, tables an older clock left in ``public``)."""
    name = f"db_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield database_url(name)
    finally:
        from dynoclock.state import engines

        for key in [k for k in engines._engines if f"/{name}" in k[0]]:
            engines._engines.pop(key).dispose()
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# ---- finding a process's Postgres backends ----------------------------------------------


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process ``pid`` holds open (from /proc)."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as fh:
            for line in fh.read().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def terminate_backends_of(pid: int) -> int:
    """pg_terminate_backend for every ``dynoclock%`` backend of process ``pid``; returns how many.

    pg_stat_activity does not show a session's search_path, so "this clock's backends" are found by the
    client port of each of the process's own sockets; other tests' clocks are never touched.
    """
    ports = client_ports(pid)
    if not ports:
        return 0
    with admin_engine().connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'dynoclock%' AND client_port = ANY(:ports)"
                ),
                {"ports": sorted(ports)},
            ).all()
        )
