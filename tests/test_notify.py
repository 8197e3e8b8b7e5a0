"""Monitoring pings, failure and recovery webhooks, and Sentry, against a local server that records what it got."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dynoclock.observe.timefmt import iso_utc
from tests.support.http import Received, Recorder, recording
from tests.support.logs import logfmt_fields
from tests.support.processes import run_cli
from tests.support.runner import Harness, now_slot
from tests.support.services import free_port

Write = Callable[[str], Path]

TWENTY_FIVE_LINES = "for i in $(seq 1 25); do echo line $i; done"
LAST_TWENTY = "\n".join(f"line {i}" for i in range(6, 26))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with recording() as server:
        yield server


def job(options: str, command: str = "echo done", job_id: str = "report") -> str:
    """One command job with notification ``options`` (YAML lines at job level)."""
    lines = "\n".join(f"    {line}" for line in options.strip().splitlines())
    return f"""
jobs:
  {job_id}:
    every: 1h
    timeout: 10s
{lines}
    command: [sh, -c, {json.dumps(command)}]
"""


def run_id_of(h: Harness, job_id: str = "report") -> str:
    [start, *_] = h.captured.of("run.start", job=job_id)
    return str(start["run_id"])


def settle(h: Harness) -> None:
    """Wait until every notification was delivered (retries included), so counts are final."""
    h.runner.notifier.flush(timeout=15)


# ---- healthchecks.io -----------------------------------------------------------------------------


def test_healthchecks_start_then_success_with_the_run_id_and_the_last_output_lines(
    write_schedule: Write, recorder: Recorder
) -> None:
    key = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    h = Harness.load(write_schedule(job(f"ping: {recorder.url}/{key}?create=1", TWENTY_FIVE_LINES)))
    assert h.run("report").status == "ok"
    settle(h)
    start, success = recorder.received
    rid = start.query["rid"][0]
    assert rid == str(uuid.UUID(rid)) and uuid.UUID(rid).hex == run_id_of(h)  # a UUID: the run's id
    assert (start.method, start.path, start.query) == ("POST", f"/{key}/start", {"create": ["1"], "rid": [rid]})
    assert start.body == b""
    assert (success.method, success.path, success.query) == ("POST", f"/{key}", {"create": ["1"], "rid": [rid]})
    assert success.body.decode() == LAST_TWENTY


def test_healthchecks_failure_pings_fail_with_the_error_as_body(write_schedule: Write, recorder: Recorder) -> None:
    h = Harness.load(write_schedule(job(f"ping: {recorder.url}/ping/abc/", "echo half done; exit 3")))
    outcome = h.run("report")
    assert (outcome.status, outcome.error) == ("failed", "exit=3: half done")
    settle(h)
    start, fail = recorder.received
    rid = str(uuid.UUID(run_id_of(h)))
    assert [(r.method, r.path, r.query) for r in (start, fail)] == [
        ("POST", "/ping/abc/start", {"rid": [rid]}),
        ("POST", "/ping/abc/fail", {"rid": [rid]}),
    ]
    assert fail.body == b"exit=3: half done"


def test_the_start_ping_arrives_first_even_when_it_needs_a_retry(write_schedule: Write) -> None:
    # healthchecks.io and Cronitor read a /start after the success as a new run that never ends: a false alarm.
    with recording(first=[503]) as server:  # the monitoring service hiccups once, on the start ping
        h = Harness.load(write_schedule(job(f"ping: {server.url}/ping/abc")))
        assert h.run("report").status == "ok"
        settle(h)
        assert [r.path for r in server.received] == ["/ping/abc/start", "/ping/abc/start", "/ping/abc"]


# ---- Cronitor --------------------------------------------------------------------------------------


def test_cronitor_style_sends_run_then_complete_with_the_run_as_series(
    write_schedule: Write, recorder: Recorder
) -> None:
    ping = f"{recorder.url}/p/apikey/report?env=production"
    h = Harness.load(write_schedule(job(f"ping: '{ping}'\nping_style: cronitor")))
    assert h.run("report").status == "ok"
    settle(h)
    run, complete = recorder.received
    series = run_id_of(h)
    assert (run.method, run.path, run.body) == ("GET", "/p/apikey/report", b"")
    assert run.query == {"env": ["production"], "state": ["run"], "series": [series]}
    assert (complete.method, complete.path) == ("GET", "/p/apikey/report")
    metric = complete.query.pop("metric")
    assert complete.query == {"env": ["production"], "state": ["complete"], "series": [series]}
    assert len(metric) == 1 and metric[0].startswith("duration:") and float(metric[0].split(":")[1]) < 5


def test_cronitor_style_failure_sends_fail_with_the_error_as_message(write_schedule: Write, recorder: Recorder) -> None:
    h = Harness.load(write_schedule(job(f"ping: {recorder.url}/p/apikey/report\nping_style: cronitor", "exit 4")))
    assert h.run("report").status == "failed"
    settle(h)
    _, fail = recorder.received
    assert fail.method == "GET"
    assert (fail.query["state"], fail.query["series"], fail.query["message"]) == (["fail"], [run_id_of(h)], ["exit=4"])


# ---- on_failure and on_recovery -------------------------------------------------------------------

FLAKY = "if [ -e {flag} ]; then echo fine; else touch {flag}; echo broken; exit 1; fi"  # fails once, then works


def test_on_failure_posts_once_after_the_last_retry(write_schedule: Write, recorder: Recorder) -> None:
    options = f"retries: 2\nretry_delay: 50ms\non_failure: {recorder.url}/hooks/slack"
    h = Harness.load(write_schedule(job(options, "echo nope; exit 1")))
    slot = now_slot()
    outcome = h.run("report", slot)
    assert (outcome.status, outcome.attempt) == ("failed", 3)
    assert len(h.captured.of("run.failed", job="report")) == 3
    settle(h)
    [alert] = recorder.received
    assert (alert.method, alert.path, alert.headers["Content-Type"]) == ("POST", "/hooks/slack", "application/json")
    message = alert.json()
    duration = message.pop("duration_ms")
    assert isinstance(duration, int) and duration >= 0
    assert message == {
        "text": f":red_circle: report failed (slot {iso_utc(slot)}, attempt 3): exit=1: nope",
        "job": "report",
        "scheduled_for": iso_utc(slot),
        "run_id": run_id_of(h),
        "attempt": 3,
        "status": "failed",
        "reason": "exit=1: nope",
    }


def test_on_failure_in_defaults_alerts_for_every_job(write_schedule: Write, recorder: Recorder) -> None:
    h = Harness.load(
        write_schedule(
            f"""
defaults:
  on_failure: {recorder.url}/hooks/slack
jobs:
  first:
    every: 1h
    command: [sh, -c, "exit 1"]
  second:
    every: 1h
    command: [sh, -c, "exit 2"]
"""
        )
    )
    assert [h.run("first").status, h.run("second").status] == ["failed", "failed"]
    settle(h)
    assert sorted((r.path, r.json()["job"], r.json()["reason"]) for r in recorder.received) == [
        ("/hooks/slack", "first", "exit=1"),
        ("/hooks/slack", "second", "exit=2"),
    ]


def test_on_failure_stays_quiet_when_a_retry_succeeds(
    write_schedule: Write, recorder: Recorder, tmp_path: Path
) -> None:
    options = f"retries: 2\nretry_delay: 50ms\non_failure: {recorder.url}/failed\non_recovery: {recorder.url}/recovered"
    h = Harness.load(write_schedule(job(options, FLAKY.format(flag=tmp_path / "flag"))))
    outcome = h.run("report")
    assert (outcome.status, outcome.attempt) == ("ok", 2)
    settle(h)
    assert recorder.received == []  # no failure to report, and no failed run before this one


def test_on_recovery_posts_once_when_a_run_succeeds_after_a_failed_one(
    write_schedule: Write, recorder: Recorder, tmp_path: Path
) -> None:
    options = f"on_failure: {recorder.url}/failed\non_recovery: {recorder.url}/recovered"
    h = Harness.load(write_schedule(job(options, FLAKY.format(flag=tmp_path / "flag"))))
    first = now_slot() - timedelta(hours=2)
    statuses = [h.run("report", first + timedelta(hours=i)).status for i in range(3)]
    assert statuses == ["failed", "ok", "ok"]
    settle(h)
    assert [r.path for r in recorder.received] == ["/failed", "/recovered"]
    recovered = recorder.received[1].json()
    assert recovered["text"] == f":large_green_circle: report recovered (slot {iso_utc(first + timedelta(hours=1))})"
    assert (recovered["job"], recovered["status"], recovered["attempt"]) == ("report", "ok", 1)


def test_on_recovery_after_a_restart_reads_the_last_outcome_from_the_ledger(
    write_schedule: Write, recorder: Recorder, tmp_path: Path
) -> None:
    options = f"on_failure: {recorder.url}/failed\non_recovery: {recorder.url}/recovered"
    path = write_schedule(job(options, FLAKY.format(flag=tmp_path / "flag")))
    env = {"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
    codes = [run_cli("run", "report", "-c", str(path), env=env, cwd=tmp_path).returncode for _ in range(3)]
    assert codes == [1, 0, 0]  # each `run JOB` is a new process: only the ledger remembers the failure
    assert [(r.path, r.json()["status"]) for r in recorder.received] == [("/failed", "failed"), ("/recovered", "ok")]


# ---- a monitoring service that hangs or is down -------------------------------------------------------


def test_a_hanging_ping_server_neither_delays_nor_fails_the_run(write_schedule: Write) -> None:
    with recording(hang=True) as server:
        h = Harness.load(write_schedule(job(f"ping: {server.url}/ping/abc")))
        outcome = h.run("report")
        assert (outcome.status, outcome.detail) == ("ok", "exit=0")  # returned while the pings still wait
        [start] = server.wait_for(1, timeout=5)  # sent, and never answered
        assert start.path == "/ping/abc/start"
        assert h.captured.names(job="report")[-1] == "run.ok"  # nothing gave up yet: the run was logged first


def test_a_ping_server_that_is_down_leaves_the_run_ok_and_is_logged_after_it(
    write_schedule: Write, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    path = write_schedule(job(f"ping: {down}/ping/abc"))
    result = run_cli("run", "report", "-c", str(path), env={"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"},
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0
    events = [logfmt_fields(line).get("event") for line in result.stdout.splitlines()]
    assert result.stdout.splitlines()[-1] == "report: ok (exit=0)"
    # Three tries each, then a warning; the run's own line came first.
    assert events.index("run.ok") < events.index("ping.start.failed")
    assert events.index("run.ok") < events.index("ping.finish.failed")


def test_run_job_delivers_a_ping_retry_before_it_exits(write_schedule: Write, tmp_path: Path) -> None:
    # `run JOB` is what crontab lines call: a ping retried after a 503 must still go out before the process ends.
    with recording(first=[503]) as server:
        path = write_schedule(job(f"ping: {server.url}/ping/abc"))
        env = {"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
        result = run_cli("run", "report", "-c", str(path), env=env, cwd=tmp_path)
        assert result.returncode == 0
        assert [r.path for r in server.received] == ["/ping/abc/start", "/ping/abc/start", "/ping/abc"]


# ---- Sentry ---------------------------------------------------------------------------------------------


def envelope_items(request: Received) -> list[tuple[dict[str, Any], Any]]:
    """A Sentry envelope: a header line, then (item header, payload) pairs."""
    lines = request.text().splitlines()
    items = []
    for header_line, payload in zip(lines[1::2], lines[2::2], strict=False):
        header = json.loads(header_line)
        items.append((header, json.loads(payload) if header.get("type") in ("event", "session") else payload))
    return items


def test_a_failed_run_is_captured_by_sentry_with_job_and_slot_tags(
    write_schedule: Write, recorder: Recorder, tmp_path: Path
) -> None:
    path = write_schedule(job("description: nightly", "echo broken >&2; exit 2", job_id="nightly-export"))
    env = {
        "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db",
        "SENTRY_DSN": f"http://public@127.0.0.1:{recorder.port}/1",
    }
    result = run_cli("run", "nightly-export", "-c", str(path), env=env, cwd=tmp_path)
    assert result.returncode == 1
    [run_line] = [f for f in map(logfmt_fields, result.stdout.splitlines()) if f.get("event") == "run.failed"]
    envelopes = recorder.wait_for(1, where=lambda r: r.path == "/api/1/envelope/")
    events = [payload for r in envelopes for header, payload in envelope_items(r) if header.get("type") == "event"]
    [event] = events
    assert event["tags"]["job"] == "nightly-export"
    assert event["tags"]["scheduled_for"] == run_line["scheduled_for"]
    assert event["extra"]["run_id"] == run_line["run_id"]
    assert event["level"] == "error"
    assert "nightly-export failed: exit=2: broken" in json.dumps(event)
