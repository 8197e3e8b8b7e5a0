"""The clock's tables in a Postgres schema of their own: which schema, made at start, an older clock's tables moved
in with their history, an app's Alembic autogenerate never sees them, and a role that may not make the schema is
told how to fix it. Each test has a database of its own (``pg_database``): its ``public`` is not shared."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dynoclock.state import tables
from dynoclock.state.engines import normalize_url
from dynoclock.state.ledger import Ledger
from dynoclock.state.schema import Migrated, SchemaNameError, clock_schema
from dynoclock.state.tables import metadata
from dynoclock.timesource import SYSTEM
from tests.support.processes import TICK_COMMAND, Clocks, run_cli, write_schedule

CLOCK_TABLES = {table.name for table in metadata.sorted_tables}
SLOT = datetime(2026, 3, 1, 12, tzinfo=UTC)
# The older clock's history: recent, so that a clock's housekeeping (history_keep) keeps it.
RECENT = SYSTEM.now().replace(microsecond=0) - timedelta(hours=1)


def tables_in(url: str) -> dict[str, set[str]]:
    """Schema -> the clock's tables in it, read with a plain connection of the database's owner."""
    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT schemaname, tablename FROM pg_tables WHERE tablename = ANY(:t)"),
                {"t": sorted(CLOCK_TABLES)},
            )
            found: dict[str, set[str]] = {}
            for schema, table in rows:
                found.setdefault(schema, set()).add(table)
            return found
    finally:
        engine.dispose()


def old_layout(url: str, runs: int = 3) -> None:
    """What a clock before this change left: its tables (schema version 3, the same definitions) where connections
    land by default (``public``), with ``runs`` rows of history, a heartbeat and a lease row."""
    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool)
    try:
        metadata.create_all(engine)  # no schema named: created in current_schema(), as the older clock did
        with engine.begin() as conn:
            conn.execute(tables.meta.insert().values(key="schema_version", value="3"))
            naive = RECENT.replace(tzinfo=None)
            conn.execute(
                tables.runs.insert(),
                [{"run_id": uuid.uuid4().hex, "job": "old-job", "scheduled_for": naive + timedelta(minutes=n),
                  "claimed_at": naive, "finished_at": naive, "status": "ok", "clock": "old-clock"}
                 for n in range(runs)],
            )  # fmt: skip
            conn.execute(tables.clocks.insert().values(clock="old-clock", role="leader", started_at=naive,
                                                       heartbeat_at=naive))  # fmt: skip
            conn.execute(tables.lease.insert().values(name="leader", holder="old-clock", epoch=7, expires_at=SLOT))
    finally:
        engine.dispose()
    assert tables_in(url) == {"public": CLOCK_TABLES}


# ---- which schema ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "env", "schema"),
    [
        ("postgresql+psycopg://h/db", {}, "dynoclock"),
        ("postgresql+psycopg://h/db", {"CLOCK_SCHEMA": "clock_app1"}, "clock_app1"),
        ("postgresql+psycopg://h/db?options=-csearch_path%3Dapp1,public", {}, "app1"),
        ("postgresql+psycopg://h/db?options=-c%20search_path%3DApp2", {}, "app2"),  # unquoted: folded, as Postgres does
        ("postgresql+psycopg://h/db?options=-csearch_path%3Dapp1", {"CLOCK_SCHEMA": "clock"}, "clock"),
        ("postgresql+psycopg://h/db?options=-cstatement_timeout%3D5s", {}, "dynoclock"),
        ("postgresql+psycopg://h/db?options=-csearch_path%3Dpublic", {}, "dynoclock"),  # the app's: never the clock's
    ],
)
def test_the_schema_is_clock_schema_else_the_urls_search_path_else_dynoclock(
    url: str, env: dict[str, str], schema: str
) -> None:
    assert clock_schema(make_url(url), env) == schema


@pytest.mark.parametrize(
    ("url", "env", "said"),
    [
        ("postgresql+psycopg://h/db", {"CLOCK_SCHEMA": "clock-app"}, "CLOCK_SCHEMA 'clock-app' is not a schema name"),
        ("postgresql+psycopg://h/db", {"CLOCK_SCHEMA": "Clock"}, "CLOCK_SCHEMA 'Clock' is not a schema name"),
        ("postgresql+psycopg://h/db", {"CLOCK_SCHEMA": "pg_clock"}, "not starting with pg_"),
        ("postgresql+psycopg://h/db", {"CLOCK_SCHEMA": "public"}, "never go in public"),
        ("postgresql+psycopg://h/db", {"CLOCK_SCHEMA": "x" * 64}, "at most 63 characters"),
        ("postgresql+psycopg://h/db?options=-csearch_path%3D%24user,public", {}, "search_path in the state URL"),
    ],
)
def test_a_schema_name_the_clock_cannot_use_is_refused_with_the_rule(url: str, env: dict[str, str], said: str) -> None:
    with pytest.raises(SchemaNameError, match=said.replace("$", r"\$")):
        clock_schema(make_url(url), env)


def test_an_invalid_clock_schema_stops_the_clock_with_one_line_and_exit_2(tmp_path: Path) -> None:
    schedule = write_schedule(tmp_path, f"jobs:\n  tick:\n    every: 1m\n    {TICK_COMMAND}\n")
    # No server is asked: the name is checked first.
    state = "postgresql://postgres@127.0.0.1:1/none"
    for args in (("run", "-c", str(schedule)), ("history",)):
        result = run_cli(*args, state=state, env={"CLOCK_SCHEMA": "my-clock"}, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "CLOCK_SCHEMA 'my-clock' is not a schema name the clock accepts" in lines[0]


# ---- the clock's own schema ----------------------------------------------------------------------


@pytest.mark.postgres
def test_the_tables_live_in_the_dynoclock_schema_and_no_search_path_is_set(pg_database: str) -> None:
    ledger = Ledger(pg_database)
    assert ledger.ensure_schema() is None
    assert ledger.claim("r1", "tick", SLOT, "clock-a")
    assert [run.run_id for run in ledger.history()] == ["r1"]
    assert tables_in(pg_database) == {"dynoclock": CLOCK_TABLES}
    with ledger.engine.connect() as conn:  # the app's search_path is the server's default, untouched
        assert conn.execute(sa.text("SHOW search_path")).scalar() == '"$user", public'
        assert conn.execute(sa.text("SELECT current_schema()")).scalar() == "public"


@pytest.mark.postgres
def test_clocks_starting_at_once_on_an_empty_database_make_the_schema_once(pg_database: str) -> None:
    ledgers = [Ledger(pg_database) for _ in range(6)]
    barrier = threading.Barrier(len(ledgers))
    errors: list[BaseException] = []

    def start(ledger: Ledger) -> None:
        try:
            barrier.wait()
            ledger.ensure_schema()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert tables_in(pg_database) == {"dynoclock": CLOCK_TABLES}


@pytest.mark.postgres
def test_clock_schema_names_the_schema_and_a_missing_search_path_schema_is_made(pg_database: str) -> None:
    # The old per-app recipe: a search_path naming a schema nobody made failed with "no schema has been selected
    # to create in". The clock now makes it.
    url = f"{pg_database}?options=-csearch_path%3Dclock_app1"
    Ledger(url).ensure_schema()
    Ledger(pg_database, schema="clock_app2").ensure_schema()
    assert tables_in(pg_database) == {"clock_app1": CLOCK_TABLES, "clock_app2": CLOCK_TABLES}


# ---- an older clock's tables move in ---------------------------------------------------------------


@pytest.mark.postgres
def test_an_older_clocks_tables_in_public_move_with_their_history(tmp_path: Path, pg_database: str) -> None:
    old_layout(pg_database)
    clocks = Clocks(tmp_path, pg_database)
    try:
        schedule = write_schedule(tmp_path, f"jobs:\n  tick:\n    every: 1h\n    {TICK_COMMAND}\n")
        first, second = clocks(schedule), clocks(schedule)  # two clocks at once: one moves the tables
        for clock in (first, second):
            clock.wait_for("clock.ready")
        moved = first.events("state.migrated") + second.events("state.migrated")
        assert [(e["from"], e["to"], e["tables"]) for e in moved] == [("public", "dynoclock", str(len(CLOCK_TABLES)))]
        assert first.stop() == 0 and second.stop() == 0
    finally:
        clocks.close()
    assert tables_in(pg_database) == {"dynoclock": CLOCK_TABLES}
    engine = sa.create_engine(normalize_url(pg_database), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT job, clock FROM dynoclock.clock_runs WHERE clock = 'old-clock'")).all()
        assert len(rows) == 3
        assert conn.execute(sa.text("SELECT value FROM dynoclock.clock_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    result = run_cli("history", "--json", state=pg_database, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    history = [run for run in json.loads(result.stdout)["runs"] if run["clock"] == "old-clock"]
    assert sorted(run["scheduled_for"] for run in history) == [
        (RECENT + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ") for n in range(3)
    ]
    assert "state.migrated" not in result.stderr  # moved once, by the clocks


@pytest.mark.postgres
def test_tables_a_urls_search_path_held_move_to_clock_schema(pg_database: str) -> None:
    url = f"{pg_database}?options=-csearch_path%3Dapp1"
    before = Ledger(url)  # CLOCK_SCHEMA unset: the search_path's schema is the clock's, as before
    before.ensure_schema()
    assert before.claim("r1", "tick", SLOT, "clock-a")
    after = Ledger(url, schema="clock")  # then CLOCK_SCHEMA=clock
    assert after.ensure_schema() == Migrated("app1", "clock", len(CLOCK_TABLES))
    assert after.ensure_schema() is None
    assert [run.run_id for run in after.history()] == ["r1"]
    assert tables_in(pg_database) == {"clock": CLOCK_TABLES}


# ---- an app's migrations ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_alembic_autogenerate_of_an_app_never_sees_the_clocks_tables(pg_database: str) -> None:
    from alembic.autogenerate import compare_metadata, produce_migrations
    from alembic.migration import MigrationContext

    app = sa.MetaData()
    users = sa.Table("users", app, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
    engine = sa.create_engine(normalize_url(pg_database), poolclass=sa.pool.NullPool)

    def diff() -> list[object]:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), app))

    def names(ops: list[object]) -> set[str]:
        return {op[1].name for op in ops if isinstance(op, tuple) and isinstance(op[1], sa.Table)}

    old_layout(pg_database)  # before: autogenerate proposes dropping every clock table
    assert names(diff()) == CLOCK_TABLES | {"users"}
    ledger = Ledger(pg_database)
    ledger.ensure_schema()
    ledger.claim("r1", "tick", SLOT, "clock-a")
    ledger.heartbeat("clock-a", "leader", SLOT)
    assert [(op[0], op[1].name) for op in diff()] == [("add_table", "users")]  # type: ignore[index]
    app.create_all(engine)
    assert diff() == []
    with engine.connect() as conn:
        script = produce_migrations(MigrationContext.configure(conn), app)
    assert script.upgrade_ops is not None and script.upgrade_ops.is_empty()
    assert users.name not in CLOCK_TABLES
    engine.dispose()


# ---- a role that may not make the schema ---------------------------------------------------------------


@pytest.fixture
def pg_role(pg_database: str) -> Iterator[tuple[str, str]]:
    """A login role with no CREATE right on the test's database: (its name, the database URL as it)."""
    role = f"dynoclock_t_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(pg_database), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    try:
        yield role, pg_database.replace("postgres@", f"{role}@", 1)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                         {"r": role})  # fmt: skip
            conn.execute(sa.text(f"DROP OWNED BY {role} CASCADE"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def as_admin(url: str, *statements: str) -> None:
    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def one_line(result: object) -> str:
    assert getattr(result, "returncode", None) == 2, result
    stderr = str(getattr(result, "stderr", ""))
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.postgres
def test_a_role_that_may_not_create_the_schema_is_told_the_fix(
    tmp_path: Path, pg_database: str, pg_role: tuple[str, str]
) -> None:
    role, url = pg_role
    schedule = write_schedule(tmp_path, f"jobs:\n  tick:\n    every: 1m\n    {TICK_COMMAND}\n")
    said = (
        f'state: cannot create schema "dynoclock": permission denied; create it once as an owner: CREATE SCHEMA '
        f"dynoclock AUTHORIZATION {role}; or set CLOCK_SCHEMA to a schema this role may use"
    )
    assert one_line(run_cli("run", "-c", str(schedule), state=url, cwd=tmp_path)) == said
    assert one_line(run_cli("history", state=url, cwd=tmp_path)) == f"history: {said}"
    as_admin(pg_database, f"CREATE SCHEMA dynoclock AUTHORIZATION {role}")  # the fix the message gives
    result = run_cli("history", "--json", state=url, cwd=tmp_path)
    assert (result.returncode, json.loads(result.stdout)) == (0, {"runs": []}), result.stderr
    assert tables_in(pg_database) == {"dynoclock": CLOCK_TABLES}


@pytest.mark.postgres
def test_a_role_without_usage_or_create_in_the_schema_is_told_the_grant(
    tmp_path: Path, pg_database: str, pg_role: tuple[str, str]
) -> None:
    role, url = pg_role
    schedule = write_schedule(tmp_path, f"jobs:\n  tick:\n    every: 1m\n    {TICK_COMMAND}\n")
    as_admin(pg_database, "CREATE SCHEMA dynoclock")  # the owner's, with no right given to the role
    use = (
        f'state: cannot use schema "dynoclock": permission denied for role {role}; as its owner: GRANT USAGE, CREATE '
        f"ON SCHEMA dynoclock TO {role}; or set CLOCK_SCHEMA to a schema this role may use"
    )
    assert one_line(run_cli("run", "-c", str(schedule), state=url, cwd=tmp_path)) == use
    as_admin(pg_database, f"GRANT USAGE ON SCHEMA dynoclock TO {role}")
    assert one_line(run_cli("history", state=url, cwd=tmp_path)) == "history: " + use.replace("USAGE, CREATE", "CREATE")
    as_admin(pg_database, f"GRANT CREATE ON SCHEMA dynoclock TO {role}")
    clock = Clocks(tmp_path, url)
    try:
        started = clock(schedule)
        started.wait_for("clock.leader")
        assert started.stop() == 0
    finally:
        clock.close()
    assert tables_in(pg_database) == {"dynoclock": CLOCK_TABLES}


@pytest.mark.postgres
def test_a_role_that_does_not_own_an_older_clocks_tables_is_told_how_to_move_them(
    tmp_path: Path, pg_database: str, pg_role: tuple[str, str]
) -> None:
    role, url = pg_role
    old_layout(pg_database)  # made by the database's owner
    as_admin(pg_database, f"CREATE SCHEMA dynoclock AUTHORIZATION {role}")
    line = one_line(run_cli("history", state=url, cwd=tmp_path))
    assert line.startswith("history: state: cannot move the clock's table clock_")
    assert f"permission denied for role {role}; start the clock once with the tables' owner" in line
    assert tables_in(pg_database) == {"public": CLOCK_TABLES}  # nothing half-moved
    result = run_cli("history", "--json", state=pg_database, cwd=tmp_path)  # the owner moves them
    assert result.returncode == 0, result.stderr
    assert f"state.migrated from=public to=dynoclock tables={len(CLOCK_TABLES)}" in result.stderr
    assert tables_in(pg_database) == {"dynoclock": CLOCK_TABLES}
