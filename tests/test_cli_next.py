"""``clock.py check`` and ``clock.py next``, run as real processes: their output and exit codes."""

from __future__ import annotations

import json
import os
import re
import sys
from textwrap import dedent
from typing import Any

import yaml

from tests.support.http import recording
from tests.support.processes import ROOT, run_cli

NOW = "2026-03-07T12:00:00Z"  # the day before New York springs forward (2026-03-08 02:00 -> 03:00)

SCHEDULE = dedent("""\
    timezone: America/New_York
    jobs:
      nightly:
        cron: "30 2 * * *"
        sql: SELECT 1
      poll:
        every: 15m
        sql: SELECT 1
      poll-utc:
        every: 15m
        timezone: UTC
        sql: SELECT 1
      launch:
        at: "2026-03-09T09:00:00"
        sql: SELECT 1
      weekly:
        cron: "5 4 * * 2"
        sql: SELECT 1
      paused:
        enabled: false
        every: 1m
        sql: SELECT 1
    """)


def _next_json(*args: str, **kwargs) -> dict[str, Any]:
    result = run_cli("next", "--json", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_check_accepts_the_shipped_schedule_and_counts_its_jobs():
    shipped = yaml.safe_load((ROOT / "schedule.yaml").read_text())
    result = run_cli("check", env={"APP_URL": ""})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"schedule\.yaml: ok, {len(shipped['jobs'])} jobs \(\d+ enabled\)\n", result.stdout)


def test_the_shipped_schedule_checks_and_runs_where_only_python3_is_on_path(tmp_path):
    # Debian and Ubuntu ship python3 and no python unless python-is-python3 is installed.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    system = "/usr/local/sbin:/usr/sbin:/sbin" + ("" if os.path.exists("/usr/bin/python") else ":/usr/bin:/bin")
    env = {"PATH": f"{bare}:{system}", "APP_URL": "", "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
    config = str(ROOT / "schedule.yaml")
    checked = run_cli("check", "-c", config, env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    shipped = yaml.safe_load((ROOT / "schedule.yaml").read_text())
    with recording() as app:  # the jobs that need the app (enabled: ${APP_URL:+true}) call this one
        with_app = env | {"APP_URL": app.url, "CLOCK_TOKEN": "t0ken-for-the-app"}
        assert run_cli("check", "-c", config, env=with_app, cwd=tmp_path).returncode == 0
        for job in shipped["jobs"]:
            result = run_cli("run", job, "-c", config, env=with_app, cwd=tmp_path)
            assert result.returncode == 0, (job, result.stdout, result.stderr)
            assert result.stdout.splitlines()[-1].startswith(f"{job}: ok"), result.stdout
        calls = {(r.method, r.path): r for r in app.received}
    assert set(calls) == {("POST", "/tasks/import-feeds"), ("POST", "/tasks/digest")}  # http: posts by default
    assert calls["POST", "/tasks/import-feeds"].headers["Authorization"] == "Bearer t0ken-for-the-app"


def test_check_warns_about_an_at_in_the_past_but_succeeds(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          launch:
            at: "2020-01-01T00:00:00Z"
            command: [echo, launched]
        """)
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    warning = "2020-01-01T00:00:00Z lies in the past: this job will not run"
    assert result.stderr == f"warning: {path}:3: jobs.launch.at: {warning}\n"
    assert "ok, 1 jobs" in result.stdout


def test_next_json_lists_exact_slots_with_offsets_across_spring_forward(write_schedule):
    path = write_schedule(SCHEDULE)
    data = _next_json("-c", str(path), "--now", NOW, "--count", "3")
    assert [{"id": job["id"], "next": job["next"]} for job in data["jobs"]] == [
        # 02:30 does not exist on 2026-03-08: cron runs it right after the change, at 03:00 EDT.
        {
            "id": "nightly",
            "next": ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"],
        },
        # every: 15m counts from the epoch, so slots fall on :00, :15, :30, :45 whatever the zone.
        {"id": "poll", "next": ["2026-03-07T07:15:00-05:00", "2026-03-07T07:30:00-05:00", "2026-03-07T07:45:00-05:00"]},
        {
            "id": "poll-utc",
            "next": ["2026-03-07T12:15:00+00:00", "2026-03-07T12:30:00+00:00", "2026-03-07T12:45:00+00:00"],
        },
        # A wall time without an offset is read in the job's zone (EDT by then).
        {"id": "launch", "next": ["2026-03-09T09:00:00-04:00"]},
        {
            "id": "weekly",
            "next": ["2026-03-10T04:05:00-04:00", "2026-03-17T04:05:00-04:00", "2026-03-24T04:05:00-04:00"],
        },
        {"id": "paused", "next": []},
    ]


def test_next_runs_a_time_repeated_by_fall_back_once(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          early:
            cron: "30 1 * * *"
            timezone: America/New_York
            sql: SELECT 1
        """)
    )
    data = _next_json("-c", str(path), "--now", "2026-10-31T12:00:00Z", "--count", "3")
    assert data["jobs"][0]["next"] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_next_now_without_offset_is_read_in_the_schedule_zone(write_schedule):
    path = write_schedule(SCHEDULE)
    data = _next_json("-c", str(path), "--now", "2026-03-07T07:00:00", "--count", "1")
    assert data["now"] == "2026-03-07T12:00:00+00:00"
    assert data["jobs"][2]["next"] == ["2026-03-07T12:15:00+00:00"]


def test_next_text_describes_each_schedule_in_words(write_schedule):
    path = write_schedule(SCHEDULE)
    result = run_cli("next", "-c", str(path), "--now", NOW, "--count", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "weekly: At 04:05 on Tuesday (America/New_York)\n    2026-03-10T04:05:00-04:00\n" in out
    assert "poll: Every 15m (America/New_York)\n" in out
    assert "launch: Once at 2026-03-09 13:00:00 UTC (America/New_York)\n" in out
    assert "paused: Every 1m (America/New_York)  [disabled]\n    (no upcoming runs)\n" in out


def test_missing_config_file_is_one_clear_line_and_exit_2(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run_cli("check", "-c", str(missing))
    assert result.returncode == 2
    assert result.stderr == f"{missing}: cannot read the schedule: No such file or directory\n"
    assert result.stdout == ""


def test_clock_schedule_variable_names_the_file_when_c_is_not_given(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          only-here:
            every: 1h
            sql: SELECT 1
        """),
        name="elsewhere.yaml",
    )
    data = _next_json("--now", NOW, "--count", "1", env={"CLOCK_SCHEDULE": str(path)})
    assert [job["id"] for job in data["jobs"]] == ["only-here"]
    assert data["jobs"][0]["next"] == ["2026-03-07T13:00:00+00:00"]


def test_c_option_wins_over_clock_schedule(write_schedule, tmp_path):
    path = write_schedule("jobs:\n  given:\n    every: 1h\n    command: [echo, given]\n")
    result = run_cli("check", "-c", str(path), env={"CLOCK_SCHEDULE": str(tmp_path / "missing.yaml")})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok, 1 jobs (1 enabled)\n"


def test_next_count_zero_is_refused(write_schedule):
    path = write_schedule(SCHEDULE)
    result = run_cli("next", "-c", str(path), "--count", "0")
    assert result.returncode == 2
    assert result.stderr == "next: --count must be at least 1\n"
    assert result.stdout == ""


def test_next_bad_now_is_refused_without_traceback(write_schedule):
    path = write_schedule(SCHEDULE)
    result = run_cli("next", "-c", str(path), "--now", "yesterday")
    assert result.returncode == 2
    assert result.stderr == "next: --now: expected an ISO-8601 time like 2026-03-08T06:00:00Z, got 'yesterday'\n"


def test_next_now_at_the_end_of_the_calendar_is_refused_without_traceback(write_schedule):
    path = write_schedule(SCHEDULE)
    result = run_cli("next", "-c", str(path), "--now", "9999-12-31T23:59:00Z")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == "next: --now: '9999-12-31T23:59:00Z' is too close to the ends of the calendar\n"


def test_next_on_an_invalid_schedule_exits_2_with_located_problem(write_schedule):
    path = write_schedule("jobs:\n  a:\n    every: 10 minutes\n    sql: SELECT 1\n")
    result = run_cli("next", "--json", "-c", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"{path}:3: jobs.a.every: expected a duration like 30s, 10m or 1h30m, got '10 minutes'\n"
