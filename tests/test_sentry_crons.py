"""Sentry Crons check-ins, sent by real ``run JOB`` processes to a loopback server standing in for Sentry's ingest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.http import Received, Recorder, recording
from tests.support.logs import logfmt_fields
from tests.support.processes import run_cli

Write = Callable[[str], Path]


@pytest.fixture
def sentry() -> Iterator[Recorder]:
    with recording() as server:
        yield server


def check_ins(requests: list[Received]) -> list[dict[str, Any]]:
    """The check_in items of Sentry envelopes (a header line, then item header and payload lines)."""
    found = []
    for request in requests:
        lines = request.text().splitlines()
        for header_line, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header_line).get("type") == "check_in":
                found.append(json.loads(payload))
    return found


def run_job(write_schedule: Write, tmp_path: Path, sentry: Recorder, job_yaml: str, job: str) -> dict[str, str]:
    path = write_schedule(f"jobs:\n  {job}:\n" + "\n".join(f"    {line}" for line in job_yaml.strip().splitlines()))
    env = {
        "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db",
        "SENTRY_DSN": f"http://key@127.0.0.1:{sentry.port}/1",
    }
    result = run_cli("run", job, "-c", str(path), env=env, cwd=tmp_path)
    ends = [f for f in map(logfmt_fields, result.stdout.splitlines()) if f.get("event") in ("run.ok", "run.failed")]
    assert len(ends) == 1, result.stdout + result.stderr
    return ends[0]


def wait_check_ins(sentry: Recorder, count: int) -> list[dict[str, Any]]:
    envelopes = sentry.wait_for(count, where=lambda r: r.path == "/api/1/envelope/" and "check_in" in r.text())
    return check_ins(envelopes)


def test_a_cron_job_checks_in_progress_then_ok_with_its_crontab_zone_margin_and_runtime(
    write_schedule: Write, tmp_path: Path, sentry: Recorder
) -> None:
    job = """
cron: "30 17 * * mon-fri"
timezone: Europe/Paris
timeout: 90s
retries: 1
retry_delay: 30s
misfire_grace: 10m
command: "echo done"
"""
    end = run_job(write_schedule, tmp_path, sentry, job, "nightly-report")
    started, finished = wait_check_ins(sentry, 2)
    assert started["monitor_slug"] == finished["monitor_slug"] == "nightly-report"
    assert (started["status"], finished["status"]) == ("in_progress", "ok")
    assert started["check_in_id"] == finished["check_in_id"] == end["run_id"]
    assert finished["duration"] == pytest.approx(int(end["duration_ms"]) / 1000)
    assert (
        started["monitor_config"]
        == finished["monitor_config"]
        == {
            "schedule": {"type": "crontab", "value": "30 17 * * mon-fri"},
            "timezone": "Europe/Paris",
            "checkin_margin": 10,
            "max_runtime": 4,  # two attempts of 90 s and the 30 s between them
        }
    )


def test_a_failing_interval_job_checks_in_error_with_its_interval(
    write_schedule: Write, tmp_path: Path, sentry: Recorder
) -> None:
    run_job(write_schedule, tmp_path, sentry, "every: 2h\ntimeout: 10s\ncommand: [sh, -c, 'exit 3']", "sync")
    check = [c for c in wait_check_ins(sentry, 2) if c["status"] != "in_progress"]
    assert [c["status"] for c in check] == ["error"]
    assert check[0]["monitor_config"]["schedule"] == {"type": "interval", "value": 2, "unit": "hour"}
    assert check[0]["monitor_config"]["max_runtime"] == 1 and check[0]["monitor_config"]["checkin_margin"] == 5


@pytest.mark.parametrize("trigger", ['at: "2030-01-01T00:00:00Z"', "every: 90s"])
def test_schedules_sentry_cannot_say_send_no_monitor_config(
    write_schedule: Write, tmp_path: Path, sentry: Recorder, trigger: str
) -> None:
    run_job(write_schedule, tmp_path, sentry, f"{trigger}\ncommand: 'echo hi'", "once")
    found = wait_check_ins(sentry, 2)
    assert sorted(c["status"] for c in found) == ["in_progress", "ok"]
    assert all("monitor_config" not in c for c in found)
