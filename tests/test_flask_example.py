"""jobs/flask_example.py: a Flask app whose jobs run in its app context, and which trusts only signed clock calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from dynoclock.signing import sign as signature
from jobs.flask_example import User, create_app, db
from tests.support.processes import run_cli

Write = Callable[[str], Path]
SECRET = "whsec-test-3f9a"
BODY = b'{"source": "all"}'


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example app on its own SQLite file, with three users; the signing secret in its environment."""
    monkeypatch.setenv("EXAMPLE_APP_DATABASE_URL", f"sqlite:///{tmp_path}/app.db")
    monkeypatch.setenv("CLOCK_SIGNING_SECRET", SECRET)
    app = create_app()
    with app.app_context():
        db.session.add_all([User(name=name) for name in ("ada", "grace", "linus")])
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


def post(app: Any, header: str | None, body: bytes = BODY) -> Any:
    headers = {"X-Clock-Signature": header} if header is not None else {}
    return app.test_client().post("/tasks/import-feeds", data=body, headers=headers, content_type="application/json")


def test_a_call_signed_by_the_clock_is_accepted(app: Any) -> None:
    response = post(app, signature(SECRET, int(time.time()), BODY))
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "slot": None}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda now: signature(SECRET, now, b'{"source": "none"}'), id="tampered-body"),
        pytest.param(lambda now: signature("not-the-secret", now, BODY), id="wrong-secret"),
        pytest.param(lambda now: signature(SECRET, now - 301, BODY), id="stale-timestamp"),
        pytest.param(lambda now: signature(SECRET, now + 301, BODY), id="future-timestamp"),
        pytest.param(
            lambda now: signature(SECRET, now, BODY).replace(f"t={now}", f"t={now + 1}"), id="moved-timestamp"
        ),
        pytest.param(lambda now: "t=abc,v1=00", id="garbage"),
        pytest.param(lambda now: None, id="missing"),
    ],
)
def test_an_unsigned_or_badly_signed_call_gets_401(app: Any, header: Callable[[int], str | None]) -> None:
    assert post(app, header(int(time.time()))).status_code == 401


def test_a_python_job_with_app_uses_the_apps_database_through_flask_sqlalchemy(
    app: Any, write_schedule: Write, tmp_path: Path
) -> None:
    path = write_schedule(
        """
jobs:
  count-users:
    every: 1h
    python: jobs.flask_example:count_users
    app: jobs.flask_example:create_app
"""
    )
    env = {"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db",
           "EXAMPLE_APP_DATABASE_URL": f"sqlite:///{tmp_path}/app.db"}  # fmt: skip
    result = run_cli("run", "count-users", "-c", str(path), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "count-users: ok (users=3)"


@pytest.fixture
def served(app: Any) -> Iterator[str]:
    """The example app on a real server on loopback (werkzeug's, as `flask run` uses)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.mark.parametrize(
    ("secret", "code", "last_line"),
    [
        (SECRET, 0, "import-feeds: ok (status=200 bytes="),
        ("a-stale-secret", 1, "import-feeds: failed (expect_status=2xx, got 401"),
    ],
    ids=["right-secret", "wrong-secret"],
)
def test_an_http_job_with_sign_is_trusted_by_the_app_only_with_its_secret(
    served: str, write_schedule: Write, tmp_path: Path, secret: str, code: int, last_line: str
) -> None:
    path = write_schedule(
        """
jobs:
  import-feeds:
    every: 10m
    http: {url: "${APP_URL}/tasks/import-feeds", json: {source: all}, sign: "${CLOCK_SIGNING_SECRET}"}
"""
    )
    env = {"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db", "APP_URL": served, "CLOCK_SIGNING_SECRET": secret}
    result = run_cli("run", "import-feeds", "-c", str(path), env=env, cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"\n{last_line}" in f"\n{result.stdout}"  # the outcome line (a 401 page may follow it)
    assert secret not in result.stdout + result.stderr  # the secret is masked wherever it would be printed
