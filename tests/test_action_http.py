"""``http:`` jobs against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dynoclock.actions.base import JobTimeout, RunContext
from dynoclock.observe.timefmt import iso_utc
from tests.support.http import Loopback
from tests.support.processes import wait_until
from tests.support.runner import Harness, now_slot
from tests.support.services import unavailable

Write = Callable[[str], Path]


def http_job(url: str, extra: str = "", timeout: str = "10s") -> str:
    """A one-job schedule calling ``url``; ``extra`` is indented under ``http:``."""
    body = "\n".join(f"      {line}" for line in extra.strip().splitlines())
    return f"""
jobs:
  call:
    every: 1h
    timeout: {timeout}
    http:
      url: {url}
{body}
"""


def test_sends_method_body_params_and_clock_headers(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(
        write_schedule(
            http_job(
                f"{loopback.url}/ok",
                """
method: PUT
params: {page: "2", q: a b}
headers: {X-App: dynoclock-test}
json: {limit: 100, tags: [a, b]}
""",
            )
        )
    )
    slot = now_slot()
    outcome = h.run("call", slot)
    assert (outcome.status, outcome.detail) == ("ok", "status=200 bytes=2")
    [req] = loopback.requests
    assert req.method == "PUT"
    url = urlsplit(req.path)
    assert url.path == "/ok"
    assert parse_qs(url.query) == {"page": ["2"], "q": ["a b"]}
    assert json.loads(req.body) == {"limit": 100, "tags": ["a", "b"]}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-App"] == "dynoclock-test"
    scheduled = iso_utc(slot)
    assert scheduled.endswith("Z")
    [start] = h.captured.of("run.start", job="call")
    assert req.headers["Idempotency-Key"] == f"call:{scheduled}"
    assert req.headers["X-Clock-Job"] == "call"
    assert req.headers["X-Clock-Scheduled-For"] == scheduled
    assert req.headers["X-Clock-Run-Id"] == start["run_id"]


def test_form_data_body_and_default_method_post(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/ok", "data: a=1&b=2")))
    assert h.run("call").status == "ok"
    [req] = loopback.requests
    assert (req.method, req.body) == ("POST", b"a=1&b=2")


def test_sign_adds_hmac_signature_of_timestamp_and_body(write_schedule: Write, loopback: Loopback) -> None:
    secret = "whsec-test-signing-key"
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/ok", f"sign: {secret}\njson: {{n: 1}}")))
    assert h.run("call").status == "ok"
    [req] = loopback.requests
    parts = dict(item.split("=", 1) for item in req.headers["X-Clock-Signature"].split(","))
    assert set(parts) == {"t", "v1"}
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert req.body == b'{"n":1}'


def test_server_error_fails_in_the_schedules_words(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/status/500")))
    outcome = h.run("call")
    assert outcome.status == "failed"
    assert outcome.error.startswith("expect_status=2xx, got 500")
    assert h.captured.names(job="call") == ["run.start", "run.failed"]


def test_expect_status_accepts_listed_codes_only(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(
        write_schedule(
            """
jobs:
  gone-is-fine:
    every: 1h
    http: {url: URL/status/410, expect_status: [2xx, 410]}
  exactly-201:
    every: 1h
    http: {url: URL/ok, expect_status: 201}
""".replace("URL", loopback.url)
        )
    )
    assert h.run("gone-is-fine").status == "ok"
    outcome = h.run("exactly-201")
    assert (outcome.status, outcome.error) == ("failed", "expect_status=201, got 200: ok")


def test_hung_server_ends_as_timeout_without_waiting_for_it(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/hang", timeout="1s")))
    outcome = h.run("call")
    assert (outcome.status, outcome.error) == ("timeout", "timeout=1s exceeded")
    assert loopback.hanging.is_set() and not loopback.released.is_set()  # the server never answered
    assert h.captured.names(job="call") == ["run.start", "run.timeout"]


def test_connection_reset_fails_the_run(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/reset")))
    outcome = h.run("call")
    assert outcome.status == "failed"
    assert outcome.error.startswith("request failed: ConnectionError")
    assert loopback.requests  # it did reach the server


def test_refused_connection_fails_the_run(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(http_job("http://127.0.0.1:1/nothing-listens")))
    outcome = h.run("call")
    assert outcome.status == "failed"
    assert outcome.error.startswith("request failed: ConnectionError")


def test_redirect_is_not_followed_by_default(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/redirect", "method: GET")))
    outcome = h.run("call")
    assert outcome.status == "failed"
    assert outcome.error.startswith("expect_status=2xx, got 302")
    assert [r.path for r in loopback.requests] == ["/redirect"]


def test_follow_redirects_reaches_the_target(write_schedule: Write, loopback: Loopback) -> None:
    h = Harness.load(write_schedule(http_job(f"{loopback.url}/redirect", "method: GET\nfollow_redirects: true")))
    outcome = h.run("call")
    assert (outcome.status, outcome.detail) == ("ok", "status=200 bytes=2")
    assert [r.path for r in loopback.requests] == ["/redirect", "/ok"]


# ---- verify: a real TLS server with a self-signed certificate ------------------------------


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("openssl") is None:
        unavailable("openssl", "it is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Ok(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_verify_refuses_a_self_signed_certificate(write_schedule: Write, tls_url: str) -> None:
    h = Harness.load(write_schedule(http_job(tls_url)))
    outcome = h.run("call")
    assert outcome.status == "failed"
    assert "SSLError" in outcome.error


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_accepts_a_self_signed_certificate(write_schedule: Write, tls_url: str) -> None:
    h = Harness.load(write_schedule(http_job(tls_url, "verify: false")))
    outcome = h.run("call")
    assert (outcome.status, outcome.detail) == ("ok", "status=204 bytes=0")


# ---- a server that drips its body ------------------------------------------------------------


class Drip:
    """A server on 127.0.0.1 that sends its headers (Content-Length 1000) at once, then one byte every 0.2 s,
    until all 1000 are sent (200 s), the client goes away, or the test ends: each socket read gets a byte well
    within a 1 s read timeout, so only the run's deadline can end the body."""

    def __init__(self) -> None:
        self.started = threading.Event()  # the body began
        self.stop = threading.Event()  # set at teardown
        self.client_gone = threading.Event()  # a write failed: the client closed the connection
        self.sent = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                owner.started.set()
                try:
                    while owner.sent < 1000 and not owner.stop.wait(0.2):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        owner.sent += 1
                except OSError:
                    owner.client_gone.set()
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/drip"


@pytest.fixture
def drip() -> Iterator[Drip]:
    server = Drip()
    yield server
    server.stop.set()
    server.server.shutdown()
    server.server.server_close()


def test_a_dripping_body_times_out_at_the_deadline_and_never_holds_other_jobs(
    write_schedule: Write, loopback: Loopback, drip: Drip
) -> None:
    h = Harness.load(
        write_schedule(
            f"""
jobs:
  drip:
    every: 1h
    timeout: 1s
    http: {{url: "{drip.url}"}}
  other:
    every: 1h
    http: {{url: "{loopback.url}/ok"}}
"""
        )
    )
    slot = now_slot()
    h.runner.submit("drip", slot)
    h.runner.submit("other", slot + timedelta(seconds=2))  # due after the drip's deadline
    # The other job starts and finishes while the drip goes on (its 1000 bytes would take 200 s).
    wait_until(
        lambda: h.captured.of("run.ok", job="other"), "the runs", timeout=60, details=lambda: str(h.captured.events)
    )
    assert drip.sent < 1000
    wait_until(
        lambda: h.captured.of("run.timeout", job="drip"), "the runs", timeout=60, details=lambda: str(h.captured.events)
    )
    assert h.captured.names(job="drip") == ["run.start", "run.timeout"]  # its own read stopped: nothing written off
    [timeout] = h.captured.of("run.timeout", job="drip")
    assert timeout["error"] == "timeout=1s exceeded"
    assert drip.client_gone.wait(60)  # the connection was closed, not left dripping into a pooled socket


def test_the_body_read_stops_at_the_deadline_by_itself(write_schedule: Write, drip: Drip) -> None:
    """No watchdog here: the action alone, in this thread, must not read past its deadline."""
    h = Harness.load(write_schedule(http_job(drip.url, timeout="1s")))
    action = h.schedule.jobs["call"].action
    assert action is not None
    ctx = RunContext("call", now_slot(), "r1", 1, timedelta(seconds=1))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            action.run(ctx)
        except BaseException as exc:
            raised.append(exc)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(60)  # only ends a hang
    assert not reader.is_alive() and drip.sent < 1000  # it gave up while the body was still coming
    assert [type(exc) for exc in raised] == [JobTimeout]
    assert not ctx.cancelled.is_set()  # nothing cancelled it: it saw its deadline itself
