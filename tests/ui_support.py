"""Shared parts of the status page tests: a state database per test (SQLite file or a fresh Postgres schema),
the status page mounted in a Flask app, and helpers to read its forms.

Import the fixtures into a test module: ``from tests.ui_support import state_url, pg_url  # noqa: F401``.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from dynoclock.state import engines as db
from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import RunReason
from dynoclock.ui import make_app
from tests.support.history import finish_run, start_run

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
UI_ENV = ("CLOCK_UI_TOKEN", "CLOCK_UI_READ_TOKEN", "CLOCK_UI_SECRET", "CLOCK_DATABASE_URL", "DATABASE_URL")


def _forget_engine(url: str) -> None:
    for state in (False, True):
        engine = db._engines.pop((db.normalize_url(url), state), None)
        if engine is not None:
            engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A state URL on a fresh Postgres schema (CREATE SCHEMA), dropped at teardown.

    Postgres unreachable: the test is skipped, or fails under CI=true."""
    admin = sa.create_engine(db.normalize_url(PG_ADMIN_URL), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    schema = f"ui_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:
        reason = f"PostgreSQL unreachable at {PG_ADMIN_URL} (set TEST_POSTGRES_URL): {type(exc).__name__}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    yield url
    _forget_engine(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """This test's state database: an SQLite file in tmp_path, or a Postgres schema of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        yield url
        _forget_engine(url)
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture(autouse=True)
def _no_ui_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status page reads its tokens and state URL from the environment: start each test without any."""
    for name in UI_ENV:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Mounted:
    """The status page at /clock inside a Flask app, as the README shows, with Flask's test client."""

    client: FlaskClient
    ledger: Ledger
    prefix: str = "/clock"

    def get(self, path: str = "/", **kwargs: Any) -> Any:
        return self.client.get(self.prefix + path, **kwargs)

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.post(self.prefix + path, data=data or {}, **kwargs)

    def login(self, token: str) -> Any:
        form = self.get("/login")
        assert form.status_code == 200, form.get_data(as_text=True)
        return self.post("/login", {"token": token, "csrf": csrf_of(form.get_data(as_text=True)), "next": "/"})

    def csrf(self, path: str = "/") -> str:
        return csrf_of(self.get(path).get_data(as_text=True))

    def act(self, action: str, job: str, **extra: str) -> Any:
        """POST an action form as the page's button would (CSRF from the page)."""
        return self.post(f"/jobs/{job}/{action}", {"csrf": self.csrf(), "back": "index", **extra})


def mount(ledger: Ledger, schedule: Path, **kwargs: Any) -> Mounted:
    flask_app = Flask("host")

    @flask_app.get("/")
    def home() -> str:
        return "the web app"

    flask_app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        flask_app.wsgi_app, {"/clock": make_app(str(schedule), ledger=ledger, **kwargs)}
    )
    return Mounted(flask_app.test_client(), ledger)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, f"no CSRF field in the page:\n{html[:3000]}"
    return match.group(1)


def add_run(
    ledger: Ledger,
    job: str,
    slot: datetime,
    status: str = "ok",
    duration_ms: int | None = 120,
    error: str | None = None,
    clock: str = "clock.1#ab12",
    reason: RunReason = "schedule",
) -> str:
    """One finished run in the ledger, as a clock would leave it."""
    run_id = uuid.uuid4().hex
    assert ledger.claim(run_id, job, slot, clock, reason)
    start_run(ledger, run_id, 1, clock)
    finish_run(ledger, run_id, status, error, duration_ms)
    return run_id


def hours_ago(n: float) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=n)).replace(microsecond=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
