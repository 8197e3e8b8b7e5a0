"""Viewing a schedule needs no action's variables: the status page and `status`, `next`, `crontab` read when
jobs run (triggers, zones, windows, `enabled`, timing options), never what they do. `check` and `run` still
read everything. A web process without APP_URL (named only in an http url) lists every job."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from dynoclock.config.loader import load_schedule
from dynoclock.config.problems import ConfigError
from dynoclock.state.ledger import Ledger
from tests.support.processes import Clocks, run_cli, wait_until
from tests.support.services import free_port
from tests.support.ui import mount

pytestmark = pytest.mark.usefixtures("no_ui_env")

Write = Callable[[str], Path]
TOKEN = "write-token-0123456789"
SCHEDULE = dedent("""\
    timezone: ${CLOCK_TZ:-Europe/London}
    defaults:
      timeout: ${JOB_TIMEOUT:-90s}
      on_failure: ${ALERT_URL}/hooks/clock
      database: ${REPORTS_DATABASE_URL}
    jobs:
      import-feeds:
        every: 10m
        ping: ${PING_URL}
        http:
          url: ${APP_URL}/tasks/import-feeds
          headers: {Authorization: "Bearer ${CLOCK_TOKEN}"}
      nightly:
        cron: "30 2 * * *"
        sql: DELETE FROM sessions WHERE expires_at < now()
      digest:
        enabled: ${APP_URL:+true}
        cron: "30 17 * * mon-fri"
        timezone: America/New_York
        http: {url: "${APP_URL}/tasks/digest"}
      report:
        cron: "0 6 * * *"
        command: [python3, -c, "print('${REPORT_NAME}')"]
    """)
JOBS = ["import-feeds", "nightly", "digest", "report"]
# What the clock's own environment has; the viewer has none of it.
CLOCK_ENV = {
    "APP_URL": "https://app.example.com",
    "CLOCK_TOKEN": "t0k",
    "ALERT_URL": "https://alerts.example.com",
    "PING_URL": "https://hc-ping.com/abc",
    "REPORTS_DATABASE_URL": "sqlite:///reports.db",
    "REPORT_NAME": "weekly",
}


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


@pytest.fixture
def schedule(write_schedule: Write, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in CLOCK_ENV:  # the viewer's environment (run_cli's processes inherit it) has none of them
        monkeypatch.delenv(name, raising=False)
    return write_schedule(SCHEDULE)


# ---- the loader ----------------------------------------------------------------------------


def test_viewing_reads_triggers_zones_and_timing_options_but_no_action(schedule: Path) -> None:
    viewed = load_schedule(str(schedule), env={"JOB_TIMEOUT": "2m"}, view=True)
    assert list(viewed.jobs) == JOBS
    assert viewed.zone.key == "Europe/London"
    jobs = viewed.jobs
    assert {job.kind for job in jobs.values()} == {"http", "sql", "command"}
    assert all(job.action is None for job in jobs.values())
    assert [job.timeout.total_seconds() for job in jobs.values()] == [120.0] * 4  # ${JOB_TIMEOUT} was read
    assert jobs["import-feeds"].ping is None and jobs["import-feeds"].on_failure is None
    assert jobs["digest"].zone.key == "America/New_York" and jobs["digest"].describe()
    # enabled: ${APP_URL:+true} is read with the viewer's environment: here APP_URL is unset, so the job is
    # disabled, and a disabled job naming an unset variable has nothing to run (no "Run now"), as in `check`.
    assert not jobs["digest"].enabled and not jobs["digest"].runnable
    assert all(jobs[job].enabled and jobs[job].runnable for job in ("import-feeds", "nightly", "report"))


def test_with_every_variable_set_viewing_and_loading_agree_on_when(schedule: Path) -> None:
    viewed = load_schedule(str(schedule), env=CLOCK_ENV, view=True)
    loaded = load_schedule(str(schedule), env=CLOCK_ENV)
    assert all(job.action is not None for job in loaded.jobs.values())
    for job_id in JOBS:
        seen, full = viewed.jobs[job_id], loaded.jobs[job_id]
        assert (seen.enabled, seen.runnable, seen.zone, seen.trigger, seen.window, seen.timeout) == (
            full.enabled, full.runnable, full.zone, full.trigger, full.window, full.timeout
        )  # fmt: skip


def test_loading_to_run_still_names_each_missing_variable_with_its_line(schedule: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_schedule(str(schedule), env={})
    where = {(p.line, p.path) for p in raised.value.problems}
    assert {(4, "defaults.on_failure"), (5, "defaults.database"), (9, "jobs.import-feeds.ping")} <= where
    assert (11, "jobs.import-feeds.http.url") in where
    assert (23, "jobs.report.command[2]") in where


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        ("jobs:\n  a:\n    every: ${POLL_EVERY}\n    http: {url: '${APP_URL}/a'}\n", 3, "jobs.a.every"),
        ("jobs:\n  a:\n    cron: '0 * * * *'\n    timezone: ${JOB_TZ}\n    sql: SELECT 1\n", 4, "jobs.a.timezone"),
        ("defaults:\n  jitter: ${JITTER}\njobs:\n  a:\n    every: 1h\n    sql: SELECT 1\n", 2, "defaults.jitter"),
        ("timezone: ${CLOCK_TZ}\njobs:\n  a:\n    every: 1h\n    sql: SELECT 1\n", 1, "timezone"),
        ("jobs:\n  a:\n    every: 1h\n    start: ${START_AT}\n    sql: SELECT 1\n", 4, "jobs.a.start"),
    ],
    ids=["trigger", "job-zone", "default-jitter", "zone", "window"],
)
def test_a_missing_variable_in_what_says_when_is_still_an_error_when_viewing(
    write_schedule: Write, text: str, line: int, path: str
) -> None:
    file = write_schedule(text)
    with pytest.raises(ConfigError) as raised:
        load_schedule(str(file), env={}, view=True)
    (problem,) = raised.value.problems
    assert (problem.line, problem.path) == (line, path)
    assert "is not set" in problem.message


def test_a_typo_or_a_second_action_is_still_an_error_when_viewing(write_schedule: Write) -> None:
    file = write_schedule("jobs:\n  a:\n    every: 1h\n    timout: 5s\n    sql: SELECT 1\n    command: [true]\n")
    with pytest.raises(ConfigError) as raised:
        load_schedule(str(file), env={}, view=True)
    messages = [str(p) for p in raised.value.problems]
    assert any("jobs.a.timout: unknown key 'timout'" in m for m in messages), messages
    assert any("expected exactly one action" in m for m in messages), messages


# ---- the command line ----------------------------------------------------------------------


def test_status_next_and_crontab_list_every_job_without_the_actions_variables(schedule: Path, tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path}/state.db"
    status = run_cli("status", "--json", "-c", str(schedule), state=state, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert [job["id"] for job in json.loads(status.stdout)["jobs"]] == JOBS
    nxt = run_cli("next", "--json", "-c", str(schedule), state=state, cwd=tmp_path)
    assert nxt.returncode == 0, nxt.stderr
    rows: dict[str, Any] = {row["id"]: row for row in json.loads(nxt.stdout)["jobs"]}
    assert list(rows) == JOBS
    assert len(rows["import-feeds"]["next"]) == 5 and rows["nightly"]["timezone"] == "Europe/London"
    assert rows["digest"]["enabled"] is False and rows["digest"]["next"] == []
    cron = run_cli("crontab", "-c", str(schedule), state=state, cwd=tmp_path)
    assert cron.returncode == 0, cron.stderr
    for job in ("import-feeds", "nightly", "report"):
        assert f" python clock.py run {job} -c " in cron.stdout, cron.stdout
    assert "# digest: disabled\n" in cron.stdout  # APP_URL is unset here: enabled: ${APP_URL:+true} is false
    assert "is not set" not in status.stderr + nxt.stderr + cron.stderr


def test_with_app_url_set_next_shows_the_job_it_enables(schedule: Path, tmp_path: Path) -> None:
    env = {"APP_URL": "https://app.example.com"}
    nxt = run_cli("next", "--json", "-c", str(schedule), env=env, cwd=tmp_path)
    assert nxt.returncode == 0, nxt.stderr
    digest = next(row for row in json.loads(nxt.stdout)["jobs"] if row["id"] == "digest")
    assert digest["enabled"] is True and len(digest["next"]) == 5


def test_check_still_reports_the_missing_variable(schedule: Path, tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(schedule), env=without(CLOCK_ENV, "APP_URL"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{schedule}:11: jobs.import-feeds.http.url: environment variable APP_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_trigger_variable_fails_status_and_next_with_its_line(write_schedule: Write, tmp_path: Path) -> None:
    file = write_schedule("jobs:\n  poll:\n    every: ${POLL_EVERY}\n    sql: SELECT 1\n")
    for command in ("next", "status", "crontab"):
        result = run_cli(command, "-c", str(file), env={"POLL_EVERY": ""}, state=f"sqlite:///{tmp_path}/s.db")
        assert result.returncode == 2, (command, result.stdout)
        assert result.stderr.startswith(f"{file}:3: jobs.poll.every: "), (command, result.stderr)


# ---- the status page -----------------------------------------------------------------------


@pytest.mark.parametrize("state_db", ["sqlite"], indirect=True)
def test_the_page_lists_every_job_without_the_actions_variables(state_db: str, schedule: Path) -> None:
    ledger = Ledger(state_db)
    ledger.ensure_schema()
    page = mount(ledger, schedule, token=TOKEN)
    assert page.login(TOKEN).status_code == 303
    html = page.get("/").get_data(as_text=True)
    assert "Schedule problem" not in html and "is not set" not in html
    for job in JOBS:
        assert f'href="/clock/jobs/{job}"' in html
    assert 'aria-label="Run import-feeds now"' in html
    assert 'aria-label="Run digest now"' not in html  # disabled here, and its url names the unset APP_URL
    assert page.act("run", "import-feeds").status_code == 303
    assert page.act("run", "digest").status_code == 409


def test_the_ui_command_serves_every_job_without_the_actions_variables(schedule: Path, start_clock: Clocks) -> None:
    port = free_port()
    ui = start_clock.start("ui", "--port", str(port), "-c", str(schedule), env={"CLOCK_UI_TOKEN": TOKEN}, name="ui")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {TOKEN}"})

    def page() -> str | None:
        assert ui.alive(), ui.text()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    try:
        html = wait_until(page, "the page to answer", timeout=30, details=ui.text)
        assert all(f'href="/jobs/{job}"' in html for job in JOBS), html
        assert "Schedule problem" not in html
    finally:
        assert ui.stop(timeout=10) == 0
