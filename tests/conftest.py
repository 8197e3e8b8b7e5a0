"""Shared fixtures: a schedule file written from text, and the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily: a broken engine module must not break every test's collection
    from tests.run_support import ClockProcess, Loopback

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the programs installed beside this interpreter (rq, celery), in any worktree


@pytest.fixture
def write_schedule(tmp_path: Path) -> Callable[[str], Path]:
    """Write ``text`` to a schedule.yaml in a temporary folder and return its path."""

    def write(text: str, name: str = "schedule.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python clock.py ARGS`` as a real process and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCK_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "clock.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- real services for the runtime tests --------------------------------------------------

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's PostgreSQL as a URL. Unreachable: the test is skipped, or fails under CI=true."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # no driver, refused, bad credentials: all mean "no Postgres here"
        cause = " ".join(str(exc).split())  # psycopg's message spans lines
        reason = f"PostgreSQL unreachable at {POSTGRES_URL} (set TEST_POSTGRES_URL): {cause}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    """A real HTTP server on 127.0.0.1 (see tests/run_support.py for its paths)."""
    from tests.run_support import Loopback

    server = Loopback().start()
    yield server
    server.stop()


@pytest.fixture
def start_clock(tmp_path: Path) -> Iterator[Callable[..., ClockProcess]]:
    """Start ``python clock.py -c FILE`` as a real process; killed at teardown if a test left it running."""
    from tests.run_support import ClockProcess

    started: list[ClockProcess] = []

    def start(schedule: Path, env: dict[str, str] | None = None) -> ClockProcess:
        # Its own state database: runs, claims and the leader lease of other tests stay out of it.
        env = {"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/clock-state.db", **(env or {})}
        clock = ClockProcess(schedule, tmp_path / f"clock-{len(started)}.log", env)
        started.append(clock)
        return clock

    yield start
    for clock in started:
        clock.kill()
