"""One log line per event, logfmt or JSON, stamped by the log's clock; and secrets that never reach any output."""

from __future__ import annotations

import io
import json
import re
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
from tests.support.processes import ClockProcess, run_cli
from tests.support.runner import now_slot

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
