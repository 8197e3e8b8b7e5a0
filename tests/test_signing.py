"""dynoclock.signing: calls signed by a real clock process, checked by the helpers on a real loopback server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify
from werkzeug.serving import make_server

import dynoclock
from dynoclock.signing import SignatureMiddleware, sign, verify_signature
from tests.support.processes import run_cli

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Write = Callable[[str], Path]
SECRET = "whsec-signing-test-8d1e"
OLD_SECRET = "whsec-signing-old-77a0"


@dataclass
class Seen:
    """What the app behind the check received: (path, X-Clock-Signature, body) of each call that reached it."""

    calls: list[tuple[str, str, bytes]] = field(default_factory=list)

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.calls.append((environ["PATH_INFO"], environ.get("HTTP_X_CLOCK_SIGNATURE", ""), body))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


@pytest.fixture
def serve() -> Iterator[Callable[[WSGIApplication], str]]:
    """Serve a WSGI app on a real loopback port; its base URL."""
    servers: list[Any] = []

    def start(app: WSGIApplication) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def one_call(write_schedule: Write, tmp_path: Path, url: str, sign_value: str) -> str:
    """``run JOB`` of a signed http job against ``url`` in a real clock process; its output."""
    path = write_schedule(
        f"""
jobs:
  signed:
    every: 1h
    http: {{url: "{url}", json: {{source: all}}, sign: {sign_value}}}
"""
    )
    result = run_cli("run", "signed", "-c", str(path), cwd=tmp_path, state=f"sqlite:///{tmp_path}/state.db")
    return result.stdout + result.stderr


def test_the_middleware_lets_a_call_signed_by_the_clock_through_and_refuses_the_wrong_secret(
    write_schedule: Write, tmp_path: Path, serve: Callable[[WSGIApplication], str]
) -> None:
    seen = Seen()
    url = serve(SignatureMiddleware(seen.app, SECRET, paths=("/tasks/",)))
    out = one_call(write_schedule, tmp_path, f"{url}/tasks/import", SECRET)
    assert "status=ok" in out, out
    assert len(seen.calls) == 1
    path, header, body = seen.calls[0]
    assert path == "/tasks/import" and body == b'{"source":"all"}'  # the app still reads the whole body
    assert header.startswith("t=") and header.count("v1=") == 1
    # The very header the clock sent: good as it came, refused with any part changed.
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, b'{"source":"none"}')  # tampered body
    assert not verify_signature("not-the-secret", header, body)  # wrong secret
    stamp = int(header.split(",")[0][2:])
    assert verify_signature(SECRET, header, body, now=stamp + 300)
    assert not verify_signature(SECRET, header, body, now=stamp + 301)  # stale: a replay after the window
    assert not verify_signature(SECRET, header, body, now=stamp - 301)  # from the future

    out = one_call(write_schedule, tmp_path, f"{url}/tasks/import", "not-the-secret")
    assert "failed" in out and "401" in out, out
    assert len(seen.calls) == 1  # refused before the app


def test_a_job_signing_with_two_secrets_passes_an_app_that_knows_either(
    write_schedule: Write, tmp_path: Path, serve: Callable[[WSGIApplication], str]
) -> None:
    seen = Seen()
    url = serve(SignatureMiddleware(seen.app, [OLD_SECRET]))  # the app not yet rotated
    out = one_call(write_schedule, tmp_path, f"{url}/tasks/x", f"[{SECRET}, {OLD_SECRET}]")
    assert "status=ok" in out, out
    _, header, body = seen.calls[0]
    assert header.count("v1=") == 2
    assert verify_signature(SECRET, header, body) and verify_signature([SECRET, "other"], header, body)
    assert SECRET not in out and OLD_SECRET not in out  # both masked in what the clock printed


def test_require_signature_guards_a_flask_view_against_real_clock_calls(
    write_schedule: Write, tmp_path: Path, serve: Callable[[WSGIApplication], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOCK_SIGNING_SECRET", SECRET)
    app = Flask(__name__)
    reached: list[bytes] = []

    @app.post("/tasks/import")
    @dynoclock.require_signature()
    def import_feeds() -> Any:
        from flask import request

        reached.append(request.get_data())
        return jsonify(ok=True)

    url = serve(app)
    assert "status=ok" in one_call(write_schedule, tmp_path, f"{url}/tasks/import", SECRET)
    out = one_call(write_schedule, tmp_path, f"{url}/tasks/import", "not-the-secret")
    assert "401" in out, out
    assert reached == [b'{"source":"all"}']


def test_paths_outside_the_prefixes_are_not_checked(serve: Callable[[WSGIApplication], str]) -> None:
    import requests

    seen = Seen()
    url = serve(SignatureMiddleware(seen.app, SECRET, paths=("/tasks/",)))
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert requests.post(f"{url}/tasks/x", data=b"{}", timeout=5).status_code == 401
    header = sign(SECRET, int(time.time()), b"{}")
    answer = requests.post(f"{url}/tasks/x", data=b"{}", headers={"X-Clock-Signature": header}, timeout=5)
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=,v1=", "t=abc,v1=00", "v1=" + "0" * 64, "t=1,t=2,v1=" + "0" * 64, "t=1", "t=-5,v1=ab",
     "t=1,v1=" + "é" * 64, "t=99999999999999999999,v1=" + "0" * 64, "x" * 10_000, b"\xff\xfe", "t=1,v1=" + "G" * 64],
)  # fmt: skip
def test_garbage_headers_are_refused_without_an_exception(header: Any) -> None:
    assert verify_signature(SECRET, header, b"{}", now=1) is False


def test_str_and_bytes_secrets_and_bodies_agree() -> None:
    header = sign(SECRET.encode(), 1_700_000_000, "{}")
    assert verify_signature(SECRET, header, b"{}", now=1_700_000_000)
    assert verify_signature(SECRET.encode(), header.encode(), "{}", now=1_700_000_000.5)
    assert not verify_signature([], header, b"{}", now=1_700_000_000)  # no secret: nothing verifies


def test_a_missing_secret_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOCK_SIGNING_SECRET", raising=False)
    middleware = SignatureMiddleware(Seen().app)
    environ = {"PATH_INFO": "/tasks/x", "wsgi.input": None}
    with pytest.raises(RuntimeError, match="CLOCK_SIGNING_SECRET is not set"):
        middleware(environ, lambda *a: None)  # type: ignore[arg-type]
