"""Shared parts of the state tests: a Postgres schema per test, the ``store`` fixture over SQLite and Postgres,
real clock processes (cwd = tmp_path, their own state URL), logfmt parsing and ledger reading.

Import the fixtures a test module uses, and those they depend on, by their function names (the fixtures
are named without ``_fixture``, so a test's ``store`` parameter does not shadow an import)::

    from tests.state_support import pg_admin_fixture, pg_schema_url_fixture, pg_schemas_fixture  # noqa: F401
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dynoclock.state import engines as db
from dynoclock.state.ledger import Ledger, Run

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TICK_COMMAND = "command: [sh, -c, 'echo $CLOCK_SCHEDULED_FOR >> ticks.txt']"  # run with cwd = tmp_path


# ---- Postgres: one schema per test ----------------------------------------------------------


def _admin() -> sa.Engine:
    return sa.create_engine(db.normalize_url(PG_URL), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session", name="pg_admin")
def pg_admin_fixture() -> sa.Engine:
    """The machine's Postgres for admin work; unreachable: skip, or fail when CI=true (CI never skips it)."""
    engine = _admin()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        reason = f"PostgreSQL unreachable at {PG_URL} (set TEST_POSTGRES_URL): {type(exc).__name__}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return engine


def schema_url(schema: str, url: str = PG_URL) -> str:
    """The state URL of one schema: every connection's search_path is that schema."""
    return f"{url}?options=-csearch_path%3D{schema}"


def forget_engine(url: str) -> None:
    """Close the pooled engine the test process made for ``url`` (db.engine_for caches one per URL)."""
    for state in (False, True):
        engine = db._engines.pop((db.normalize_url(url), state), None)
        if engine is not None:
            engine.dispose()


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


def drop_schema(engine: sa.Engine, schema: str) -> None:
    """DROP SCHEMA ... CASCADE, first ending sessions that still hold locks on its tables."""
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND l.pid <> pg_backend_pid()"
            ),
            {"s": schema},
        )
        conn.execute(sa.text("SET lock_timeout = '20s'"))
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


@pytest.fixture(name="pg_schema_url")
def pg_schema_url_fixture(pg_schemas: Callable[[], str]) -> str:
    """A state URL on a fresh Postgres schema of this test's own."""
    return pg_schemas()


def schema_of(url: str) -> str:
    match = re.search(r"search_path%3D(\w+)", url)
    assert match, url
    return match.group(1)


# ---- state over both backends -----------------------------------------------------------


@pytest.fixture(name="state_db", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_db_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The state URL of this test: an SQLite file in tmp_path, or a Postgres schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture(name="store")
def store_fixture(state_db: str) -> Iterator[Ledger]:
    """A Ledger with its schema ensured, on SQLite and on Postgres."""
    ledger = Ledger(state_db)
    ledger.ensure_schema()
    yield ledger
    forget_engine(state_db)


def all_runs(ledger: Ledger, job: str | None = None) -> list[Run]:
    """Every row of the ledger, oldest slot first."""
    return list(reversed(ledger.history(job, limit=1_000_000)))


def rows_by_slot(ledger: Ledger, job: str) -> dict[datetime, Run]:
    runs = all_runs(ledger, job)
    by_slot = {run.scheduled_for: run for run in runs}
    assert len(by_slot) == len(runs), "two rows for one slot"
    return by_slot


# ---- real clock processes ---------------------------------------------------------------


def clock_env(state: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a clock or CLI process: ours without any state or Heroku variables, plus ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCK_") and k not in ("DATABASE_URL", "DYNO")}
    if state:  # "": no state variable at all (the default SQLite file under the cwd)
        env["CLOCK_DATABASE_URL"] = state
    env.update(extra or {})
    return env


def cli(
    cwd: Path, state: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python clock.py ARGS`` with cwd = ``cwd`` and its state in ``state``."""
    return subprocess.run(
        [sys.executable, str(ROOT / "clock.py"), *args],
        cwd=cwd,
        env=clock_env(state, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def logfmt_fields(line: str) -> dict[str, str]:
    """One logfmt line: ``key=value``, values JSON-quoted when they hold spaces or quotes."""
    fields = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        value = m.group(2)
        fields[m.group(1)] = json.loads(value) if value.startswith('"') else value
    return fields


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class Clock:
    """``python clock.py -c SCHEDULE`` as a real process with cwd = the test's folder; its output goes to a file."""

    def __init__(self, cwd: Path, schedule: Path, state: str, name: str, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = cwd / f"{name}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "clock.py"), "-c", str(schedule)],
                cwd=cwd,
                env=clock_env(state, env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started = datetime.now(UTC)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, event: str | None = None, **match: str) -> list[dict[str, str]]:
        out = []
        for line in self.text().splitlines():
            fields = logfmt_fields(line)
            if "event" not in fields or (event is not None and fields["event"] != event):
                continue
            if all(fields.get(k) == v for k, v in match.items()):
                out.append(fields)
        return out

    def wait_for(self, event: str, count: int = 1, timeout: float = 40, **match: str) -> dict[str, str]:
        """Wait until the process has logged ``count`` such events (state decides; ``timeout`` only ends a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event, **match)
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {count} {event} {match} (exit={self.proc.poll()}):\n{self.text()[-6000:]}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> datetime:
        """Send ``sig``; returns the moment it was sent."""
        moment = datetime.now(UTC)
        self.proc.send_signal(sig)
        return moment

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM and wait for the exit code."""
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> datetime:
        """SIGKILL and reap; returns the moment of the kill."""
        moment = self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return moment


def _clock_factory(tmp_path: Path, state: str) -> Iterator[Callable[..., Clock]]:
    started: list[Clock] = []

    def start(schedule: Path, env: dict[str, str] | None = None) -> Clock:
        clock = Clock(tmp_path, schedule, state, f"clock-{len(started)}", env)
        started.append(clock)
        return clock

    yield start
    for clock in started:
        if clock.alive():
            with contextlib.suppress(Exception):
                clock.kill()


@pytest.fixture(name="clocks")
def clocks_fixture(tmp_path: Path, state_db: str) -> Iterator[Callable[..., Clock]]:
    """Start clock processes on this test's state (SQLite or Postgres); every one still running is killed at
    teardown, before the state's schema is dropped (this fixture depends on it)."""
    yield from _clock_factory(tmp_path, state_db)


@pytest.fixture(name="pg_clocks")
def pg_clocks_fixture(tmp_path: Path, pg_schema_url: str) -> Iterator[Callable[..., Clock]]:
    """``clocks`` on a Postgres schema only."""
    yield from _clock_factory(tmp_path, pg_schema_url)


def write_schedule(folder: Path, text: str, name: str = "schedule.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def tick_slots(folder: Path) -> list[datetime]:
    """The slots the tick command wrote to ticks.txt, in the order written (duplicates kept)."""
    path = folder / "ticks.txt"
    if not path.exists():
        return []
    return [parse_ts(line) for line in path.read_text().split()]


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 40) -> Any:
    """Poll ``predicate`` until it is truthy (state decides; ``timeout`` only ends a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def slot_floor(moment: datetime, step: timedelta) -> datetime:
    """The latest slot of an epoch-anchored ``every: step`` at or before ``moment``."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


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
    with _admin().connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'dynoclock%' AND client_port = ANY(:ports)"
                ),
                {"ports": sorted(ports)},
            ).all()
        )
