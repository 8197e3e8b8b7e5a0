"""One log line per event, logfmt or JSON, stamped by the log's clock; and secrets that never reach any output."""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dynoclock.actions.base import JobTimeout, RunContext
from dynoclock.config.loader import load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.observe.timefmt import iso_utc
from dynoclock.run.runner import Runner
from tests.support.clock import FakeClock
from tests.support.http import Loopback
from tests.support.logs import logfmt_fields
from tests.support.processes import ClockProcess, Clocks, run_cli, wait_until
from tests.support.runner import now_slot
from tests.support.services import free_port

Write = Callable[[str], Path]
StartClock = Callable[..., ClockProcess]
JOBS = "tests.jobs_for_tests"


def test_a_run_logs_one_logfmt_line_per_event(write_schedule: Write) -> None:
    path = write_schedule(
        f"""
jobs:
  digest: {{every: 1h, python: "{JOBS}:echo_args", args: [1]}}
  broken: {{every: 1h, python: "{JOBS}:explode", kwargs: {{message: "first line\\nsecond line"}}}}
"""
    )
    schedule = load_schedule(str(path))
    stream = io.StringIO()
    runner = Runner(schedule, EventLog(stream, fmt="logfmt"))
    slot = now_slot()
    runner.execute(schedule.jobs["digest"], slot)
    runner.execute(schedule.jobs["broken"], slot)
    lines = stream.getvalue().splitlines()
    assert [logfmt_fields(line)["event"] for line in lines] == ["run.start", "run.ok", "run.start", "run.failed"]
    assert all(line.startswith("ts=") and " level=" in line for line in lines)
    ok = logfmt_fields(lines[1])
    assert ok["job"] == "digest"
    assert ok["scheduled_for"] == iso_utc(slot)
    assert ok["status"] == "ok"
    assert ok["attempt"] == "1"
    assert re.fullmatch(r"-?\d+", ok["lateness_ms"])
    assert re.fullmatch(r"\d+", ok["duration_ms"])
    assert ok["run_id"] == logfmt_fields(lines[0])["run_id"]
    assert logfmt_fields(lines[3])["error"] == "ValueError: first line\nsecond line"  # quoted, still one line


def test_log_format_json_gives_json_lines(write_schedule: Write, tmp_path: Path) -> None:
    path = write_schedule(f'jobs:\n  digest: {{every: 1h, python: "{JOBS}:echo_args", args: [1]}}\n')
    result = run_cli(
        "run", "digest", "-c", str(path),
        env={"LOG_FORMAT": "json", "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    *log_lines, outcome = result.stdout.splitlines()
    records = [json.loads(line) for line in log_lines]
    events = [r["event"] for r in records]
    assert events[-2:] == ["run.start", "run.ok"]
    ok = records[-1]
    assert ok["job"] == "digest"
    assert isinstance(ok["duration_ms"], int) and isinstance(ok["attempt"], int)
    assert {"ts", "level", "scheduled_for", "run_id", "lateness_ms"} <= ok.keys()
    assert outcome.startswith("digest: ok")


def test_each_line_is_stamped_by_the_logs_clock_to_the_millisecond() -> None:
    clock = FakeClock(datetime(2026, 3, 8, 6, 59, 59, 123456, tzinfo=UTC))
    stream = io.StringIO()
    events = EventLog(stream, fmt="json", clock=clock)
    events.emit("clock.start", since=clock.now() + timedelta(minutes=1))
    clock.advance(1.5)
    events.emit("clock.stop")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["ts"], first["since"]) == ("2026-03-08T06:59:59.123Z", "2026-03-08T07:00:59.123456Z")
    assert second["ts"] == "2026-03-08T07:00:00.623Z"


def test_a_run_context_counts_its_timeout_on_its_clock() -> None:
    clock = FakeClock()
    ctx = RunContext("task", clock.now(), "run-1", 1, timedelta(seconds=30), clock=clock)
    assert ctx.remaining == 30.0
    clock.advance(29)
    assert ctx.remaining == 1.0
    ctx.check()
    clock.advance(2)
    assert ctx.remaining == 0.0
    with pytest.raises(JobTimeout):
        ctx.check()


# ---- secrets ---------------------------------------------------------------------------------

TOKEN = "s3cr3t-token-value"
SIGNING = "sig-secret-value-123"
DB_PASSWORD = "hunter2pass"
SECRETS = (TOKEN, SIGNING, DB_PASSWORD)


def leaky_schedule(url: str) -> str:
    """Jobs that each try to put a secret into the output."""
    return f"""
jobs:
  call-app:
    every: 1s
    http:
      url: {url}/echo500
      headers: {{Authorization: "Bearer ${{CLOCK_TOKEN}}"}}
      json: {{note: "token ${{CLOCK_TOKEN}}"}}
      sign: ${{SIGNING_SECRET}}
  print-token:
    every: 1s
    shell: true
    command: echo "token=$CLOCK_TOKEN secret=$SIGNING_SECRET"; echo "$CLOCK_TOKEN" >&2; exit 1
  prune:
    every: 1s
    database: postgresql://user:{DB_PASSWORD}@127.0.0.1:1/x
    sql: SELECT 1
  leak:
    every: 1s
    python: {JOBS}:leak_env
    kwargs: {{name: CLOCK_TOKEN}}
"""


def assert_no_secrets(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} leaked:\n{output}"


def test_secrets_never_reach_the_clocks_output(
    write_schedule: Write, start_clock: StartClock, loopback: Loopback
) -> None:
    clock = start_clock(
        write_schedule(leaky_schedule(loopback.url)), env={"CLOCK_TOKEN": TOKEN, "SIGNING_SECRET": SIGNING}
    )
    for job in ("call-app", "print-token", "prune", "leak"):
        clock.wait_for("run.failed", job=job)
    clock.signal(signal.SIGTERM)
    assert clock.wait(timeout=35) == 0
    output = clock.text()
    assert_no_secrets(output)
    # They were there to leak, and were masked:
    assert any(req.headers.get("Authorization") == f"Bearer {TOKEN}" for req in loopback.requests)
    assert "Bearer ***" in output
    assert "token=*** secret=***" in output
    assert "user:***@127.0.0.1:1/x" in output
    assert "could not use ***" in output


def test_secrets_never_reach_the_output_of_run_job(write_schedule: Write, loopback: Loopback, tmp_path: Path) -> None:
    path = write_schedule(leaky_schedule(loopback.url))
    env = {"CLOCK_TOKEN": TOKEN, "SIGNING_SECRET": SIGNING, "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
    for job in ("call-app", "print-token", "prune", "leak"):
        result = run_cli("run", job, "-c", str(path), env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert_no_secrets(result.stdout + result.stderr)
        assert result.stdout.splitlines()[-1].startswith(f"{job}: failed")
    # What was stored is masked too: history (text and JSON) and status read it back from the ledger.
    for command in (["history"], ["history", "--json"], ["status", "--json", "-c", str(path)]):
        shown = run_cli(*command, env=env)
        assert shown.returncode == 0, shown.stderr
        assert_no_secrets(shown.stdout + shown.stderr)
    assert "could not use ***" in run_cli("history", "--json", env=env).stdout


def test_an_env_secret_the_schedule_never_names_is_masked_too(write_schedule: Write, tmp_path: Path) -> None:
    path = write_schedule("jobs:\n  show-env:\n    every: 1h\n    shell: true\n    command: echo $API_KEY; exit 1\n")
    env = {"API_KEY": "key-from-the-env-only", "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
    result = run_cli("run", "show-env", "-c", str(path), env=env)
    assert result.returncode == 1
    assert "key-from-the-env-only" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "show-env: failed (exit=1: ***)"


# ---- credentials written into the schedule itself ---------------------------------------------

URL_USER, URL_TOKEN = "clockbot", "url-token-9e8d7c"
URL_BASIC = base64.b64encode(f"{URL_USER}:{URL_TOKEN}".encode()).decode()
PROXY_BASIC = base64.b64encode(b"proxyuser:literal-proxy-pw").decode()
LITERAL_HEADERS = {  # job: (header, value written in the schedule, no ${VAR})
    "bearer": ("Authorization", "Bearer literal-bearer-7f3a9c"),
    "proxy": ("Proxy-Authorization", f"Basic {PROXY_BASIC}"),
    "api-key": ("X-Api-Key", "literal-apikey-51d2e8"),
    "cookie": ("Cookie", "sid=literal-cookie-c0ffee"),
    "auth-token": ("X-Auth-Token", "literal-token-ab12cd"),
    "webhook-secret": ("X-Webhook-Secret", "literal-whsecret-3344"),
}
CUT_KEY = "literal-cutkey-0a1b2c3d4e5f"
LITERALS = (  # what must never show: each credential, as written or as derived from what is written
    "literal-bearer-7f3a9c", PROXY_BASIC, "literal-apikey-51d2e8", "literal-cookie-c0ffee", "literal-token-ab12cd",
    "literal-whsecret-3344", URL_TOKEN, URL_BASIC, CUT_KEY, "literal-sign-secret-77", "literal-cu",
    "literal-param-key-77", "literal-envtoken-99aa",
)  # fmt: skip
_PLAIN = {"host", "user-agent", "accept", "accept-encoding", "connection", "content-length", "idempotency-key"}


class EchoingApp:
    """An app on loopback whose error page (500) echoes the request, as a careless one's does: ``/echo`` every
    header but the clock's and the usual ones, then the query; ``/cut`` 290 dots, then the X-Api-Key value, so
    that the first 300 characters the run keeps end inside it."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.received.append(dict(self.headers.items()))
                if self.path == "/cut":
                    body = "." * 290 + self.headers.get("X-Api-Key", "")
                else:
                    shown = [(k, v) for k, v in self.headers.items() if k.lower() not in _PLAIN and k[:8] != "X-Clock-"]
                    query = self.path.partition("?")[2]
                    body = "; ".join(f"{k}: {v}" for k, v in [*shown, *([("Query", query)] if query else [])])
                self.send_response(500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.port = self.server.server_address[1]


@pytest.fixture
def echoing_app() -> Iterator[EchoingApp]:
    app = EchoingApp()
    yield app
    app.server.shutdown()
    app.server.server_close()


def literal_schedule(port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    jobs = [
        f"  {job}: {{every: 1h, http: {{url: {url}/echo, headers: {{{name}: {json.dumps(value)}}}}}}}"
        for job, (name, value) in LITERAL_HEADERS.items()
    ]
    jobs.append(
        f"  url-credentials: {{every: 1h, http: {{url: 'http://{URL_USER}:{URL_TOKEN}@127.0.0.1:{port}/echo'}}}}"
    )
    jobs.append(f"  cut: {{every: 1h, http: {{url: {url}/cut, headers: {{X-Api-Key: {CUT_KEY}}}}}}}")
    jobs.append(
        f"  signed: {{every: 1h, http: {{url: {url}/echo, sign: literal-sign-secret-77,"
        " headers: {Accept: application/json, X-Request-Source: the-clock-itself}}}"
    )
    jobs.append(
        f"  params: {{every: 1h, http: {{url: {url}/echo,"
        " params: {api_key: literal-param-key-77, source: clock-itself-param}}}"
    )
    jobs.append(
        "  env-token: {every: 1h, shell: true, command: 'echo \"$API_TOKEN\"; exit 1',"
        " env: {API_TOKEN: literal-envtoken-99aa, GREETING: plain-greeting}}"
    )
    return "jobs:\n" + "\n".join(jobs) + "\n"


def assert_no_literals(where: str, text: str) -> None:
    leaked = [secret for secret in LITERALS if secret in text]
    assert not leaked, f"{where}: {leaked} leaked:\n{text[-4000:]}"


def test_credentials_written_in_the_schedule_never_reach_output_history_or_pages(
    write_schedule: Write, echoing_app: EchoingApp, start_clock: Clocks
) -> None:
    """Header values named like credentials and URL user-info, written as they are (no ${VAR}), are masked:
    the values, the Bearer token in them, and the Basic-auth base64 that requests derives from user:password."""
    path = write_schedule(literal_schedule(echoing_app.port))
    env = {"CLOCK_DATABASE_URL": start_clock.state, "CLOCK_UI_TOKEN": "ui-token-for-literal-test"}
    jobs = [*LITERAL_HEADERS, "url-credentials", "cut", "signed", "params", "env-token"]
    for job in jobs:
        result = run_cli("run", job, "-c", str(path), env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert_no_literals(f"run {job}", result.stdout + result.stderr)
        assert result.stdout.splitlines()[-1].startswith(f"{job}: failed ("), result.stdout
    # They reached the app, and the app echoed them: there was something to mask.
    sent = {item for headers in echoing_app.received for item in headers.items()}
    assert {*LITERAL_HEADERS.values(), ("Authorization", f"Basic {URL_BASIC}"), ("X-Api-Key", CUT_KEY)} <= sent
    history = run_cli("history", "--json", env=env)
    assert history.returncode == 0, history.stderr
    assert_no_literals("history --json", history.stdout + history.stderr)
    errors = {run["job"]: run["error"] for run in json.loads(history.stdout)["runs"]}
    assert errors["bearer"].endswith("got 500: Authorization: Bearer ***")
    assert errors["cookie"].endswith("got 500: Cookie: sid=***")
    assert errors["url-credentials"].endswith("got 500: Authorization: Basic ***")
    assert errors["cut"].endswith("." * 10 + "***")
    assert "X-Request-Source: the-clock-itself" in errors["signed"]  # ordinary headers stay readable
    assert errors["params"].endswith("Query: api_key=***&source=clock-itself-param")
    assert errors["env-token"] == "exit=1: ***"
    for command in (["history"], ["status", "--json", "-c", str(path)]):
        shown = run_cli(*command, env=env)
        assert shown.returncode == 0, shown.stderr
        assert_no_literals(" ".join(command), shown.stdout + shown.stderr)
    # The status page shows the same history, masked too.
    port = free_port()
    ui = start_clock.start("ui", "-c", str(path), "--port", str(port), env=env, name="ui")
    bearer = {"Authorization": "Bearer ui-token-for-literal-test"}
    pages = [wait_until(lambda: page_text(f"http://127.0.0.1:{port}/", bearer), "the page", details=ui.text)]
    pages += [page_text(f"http://127.0.0.1:{port}/jobs/{job}", bearer) for job in jobs]
    assert all(text and ("***" in text) == (job != "signed") for job, text in zip(jobs, pages[1:], strict=True))
    assert_no_literals("pages", "".join(pages) + ui.text())


def page_text(url: str, headers: dict[str, str]) -> str:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_the_schedule_marks_literal_credentials_as_secrets_and_nothing_else(write_schedule: Write) -> None:
    secrets = load_schedule(str(write_schedule(literal_schedule(9)))).secrets
    assert set(LITERALS) - {"literal-cu"} <= secrets
    assert not {"application/json", "the-clock-itself", "clock-itself-param", "plain-greeting", URL_USER} & secrets
    assert not {"Bearer", "sid"} & secrets
