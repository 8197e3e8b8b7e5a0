"""Shared parts of the status page tests: an environment without the page's variables, the status page
mounted in a Flask app, its forms, and runs in its ledger."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from tests.support.history import finish_run, start_run

if TYPE_CHECKING:  # imported where used: a broken engine module must not break every test's collection
    from dynoclock.state.ledger import Ledger
    from dynoclock.state.tables import RunReason

UI_ENV = ("CLOCK_UI_TOKEN", "CLOCK_UI_READ_TOKEN", "CLOCK_UI_SECRET", "CLOCK_DATABASE_URL", "DATABASE_URL")


@pytest.fixture(name="no_ui_env")
def no_ui_env_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status page reads its tokens and state URL from the environment: a test of it starts without any
    (its module says ``pytestmark = pytest.mark.usefixtures("no_ui_env")``)."""
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
    """The status page on ``ledger`` and ``schedule``, at /clock inside a Flask app."""
    from dynoclock.ui import make_app

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
