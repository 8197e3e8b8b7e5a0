"""The status page (dynoclock.ui) mounted in a Flask app, on SQLite and on Postgres: access, roles, CSRF,
actions written to the ledger, pages, and that no secret of the schedule is ever rendered."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent

import pytest
from flask import Flask, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from dynoclock.state.controls import Controls
from dynoclock.state.ledger import Ledger
from dynoclock.ui import make_app
from tests.support.clock import FakeClock
from tests.support.processes import Clocks, run_cli
from tests.support.services import free_port
from tests.support.ui import add_run, hours_ago, mount

pytestmark = pytest.mark.usefixtures("no_ui_env")

WRITE, READ = "write-token-0123456789", "read-token-0123456789"
CLOCK_TOKEN = "s3cr3t-bearer-value-9f8e7d"
SCHEDULE = dedent("""\
    timezone: Europe/London
    jobs:
      nightly:
        cron: "30 2 * * *"
        description: Prunes sessions
        sql: DELETE FROM sessions WHERE expires_at < now()
      import-feeds:
        every: 10m
        timezone: UTC
        description: "Calls the app with ${CLOCK_TOKEN}"
        http:
          url: http://127.0.0.1:9/tasks/import-feeds?key=${CLOCK_TOKEN}
          headers: {Authorization: "Bearer ${CLOCK_TOKEN}"}
      yearly:
        cron: "0 0 1 1 *"
        command: [echo, hello-from-yearly]
    """)


@pytest.fixture
def ledger(state_db: str) -> Ledger:
    ledger = Ledger(state_db)
    ledger.ensure_schema()
    return ledger


@pytest.fixture
def schedule(write_schedule: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOCK_TOKEN", CLOCK_TOKEN)
    return write_schedule(SCHEDULE)


@pytest.fixture
def page(ledger: Ledger, schedule: Path):
    """The page with both tokens configured, signed in with the read-write one."""
    mounted = mount(ledger, schedule, token=WRITE, read_token=READ)
    assert mounted.login(WRITE).status_code == 303
    return mounted


def text_of(response) -> str:
    body: str = response.get_data(as_text=True)
    return body


# ---- access --------------------------------------------------------------------------------


def test_every_page_is_403_with_how_to_enable_it_when_no_access_is_configured(ledger, schedule):
    mounted = mount(ledger, schedule)
    for path in ("/", "/jobs/nightly", "/login"):
        response = mounted.get(path)
        assert response.status_code == 403
        assert "CLOCK_UI_TOKEN" in text_of(response)
    assert mounted.post("/jobs/nightly/run", {"csrf": "x"}).status_code == 403
    assert Controls(ledger).pending_requests() == []


def test_tokens_come_from_the_environment(ledger, schedule, monkeypatch):
    monkeypatch.setenv("CLOCK_UI_TOKEN", WRITE)
    mounted = mount(ledger, schedule)
    assert mounted.get("/").status_code == 401
    assert mounted.get("/", headers={"Authorization": f"Bearer {WRITE}"}).status_code == 200


def test_without_a_valid_token_the_page_asks_to_sign_in(ledger, schedule):
    mounted = mount(ledger, schedule, token=WRITE)
    response = mounted.get("/")
    assert response.status_code == 401
    assert 'name="token"' in text_of(response) and "nightly" not in text_of(response)
    assert mounted.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    failed = mounted.login("not-the-token")
    assert failed.status_code == 401 and "not valid" in text_of(failed)


def test_login_sets_an_httponly_samesite_strict_cookie_scoped_to_the_mount(ledger, schedule):
    mounted = mount(ledger, schedule, token=WRITE)
    response = mounted.login(WRITE)
    assert response.status_code == 303 and response.headers["Location"] == "/clock/"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("dynoclock_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/clock/" in cookie
    assert WRITE not in cookie  # an HMAC derived from the token, not the token
    assert mounted.get("/").status_code == 200
    signed_out = mounted.post("/logout", {"csrf": mounted.csrf()})
    assert signed_out.status_code == 303
    assert mounted.get("/").status_code == 401


def test_read_only_role_sees_no_action_buttons_and_its_posts_are_403(ledger, schedule):
    mounted = mount(ledger, schedule, token=WRITE, read_token=READ)
    assert mounted.login(READ).status_code == 303
    for path in ("/", "/jobs/nightly"):
        html = text_of(mounted.get(path))
        assert "read-only" in html
        assert "Run now" not in html and "/run" not in html and "/pause" not in html
    csrf = mounted.csrf()  # the sign-out form's token: valid, yet the role decides
    for action in ("run", "pause", "resume"):
        assert mounted.post(f"/jobs/nightly/{action}", {"csrf": csrf}).status_code == 403
    assert Controls(ledger).pending_requests() == [] and Controls(ledger).paused() == {}


def test_auth_callable_from_the_host_app_grants_roles(ledger, schedule):
    roles = {"alice": "write", "bob": "read"}
    mounted = mount(ledger, schedule, auth=lambda environ: roles.get(environ.get("HTTP_X_USER", "")))
    assert mounted.get("/").status_code == 403  # no login form: the host app signs people in
    assert "Run now" not in text_of(mounted.get("/", headers={"X-User": "bob"}))
    alice = {"X-User": "alice"}
    csrf = re.search(r'name="csrf" value="(\w+)"', text_of(mounted.get("/", headers=alice)))
    assert csrf
    response = mounted.post("/jobs/yearly/run", {"csrf": csrf.group(1)}, headers=alice)
    assert response.status_code == 303
    assert [r["job"] for r in Controls(ledger).pending_requests()] == ["yearly"]
    assert Controls(ledger).pending_requests()[0]["requested_by"] == "status page (app)"


def test_auth_callable_can_read_the_host_apps_flask_session(ledger, schedule):
    """The README's pattern: the callable enters Flask's request context to see who is signed in."""
    host = Flask("host")
    host.secret_key = "host-secret-key-for-tests"

    @host.get("/signin/<role>")
    def signin(role: str) -> str:
        session["role"] = role
        return "signed in"

    def clock_access(environ):
        with host.request_context(environ):
            return session.get("role")

    host.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        host.wsgi_app, {"/clock": make_app(str(schedule), ledger=ledger, auth=clock_access)}
    )
    client = host.test_client()
    assert client.get("/clock/").status_code == 403
    client.get("/signin/read")
    assert client.get("/clock/").status_code == 200 and "Run now" not in text_of(client.get("/clock/"))
    client.get("/signin/write")
    assert "Run now" in text_of(client.get("/clock/"))


# ---- actions -------------------------------------------------------------------------------


def test_run_now_writes_a_request_for_the_leader(page, ledger):
    response = page.act("run", "yearly")
    assert response.status_code == 303
    assert response.headers["Location"] == "/clock/?notice=run&job=yearly"
    [request] = Controls(ledger).pending_requests()
    assert request["job"] == "yearly" and request["taken_at"] is None
    html = text_of(page.client.get(response.headers["Location"]))
    assert "picks it up within a few seconds" in html and "run requested" in html


def test_pause_and_resume_change_what_the_ledger_says(page, ledger):
    assert page.act("pause", "nightly").status_code == 303
    assert set(Controls(ledger).paused()) == {"nightly"}
    row = re.search(r'<tr data-job="nightly">.*?</tr>', text_of(page.get("/")), re.S)
    assert row and "paused" in row.group(0) and "Resume" in row.group(0)
    assert page.act("resume", "nightly").status_code == 303
    assert Controls(ledger).paused() == {}


def test_actions_on_an_unknown_job_are_404(page, ledger):
    assert page.act("run", "no-such-job").status_code == 404
    assert page.act("pause", "no-such-job").status_code == 404
    assert Controls(ledger).pending_requests() == [] and Controls(ledger).paused() == {}


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "not-hex"])
def test_posts_without_the_right_csrf_token_are_rejected(page, ledger, csrf):
    data = {"back": "index"} if csrf is None else {"csrf": csrf, "back": "index"}
    response = page.post("/jobs/yearly/run", data)
    assert response.status_code == 400
    assert "CSRF" in text_of(response)
    assert Controls(ledger).pending_requests() == []


def test_a_csrf_token_from_another_browser_is_rejected(ledger, schedule, page):
    other = mount(ledger, schedule, token=WRITE)
    other.login(WRITE)
    assert page.post("/jobs/yearly/run", {"csrf": other.csrf()}).status_code == 400


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "null"])
def test_posts_from_a_foreign_origin_are_403(page, ledger, origin):
    response = page.post("/jobs/yearly/run", {"csrf": page.csrf()}, headers={"Origin": origin})
    assert response.status_code == 403
    assert Controls(ledger).pending_requests() == []
    same_site = page.post("/jobs/yearly/run", {"csrf": page.csrf()}, headers={"Origin": "http://localhost"})
    assert same_site.status_code == 303


# ---- pages ---------------------------------------------------------------------------------


def test_jobs_table_shows_schedule_zone_next_last_failures_and_paused(page, ledger):
    add_run(ledger, "nightly", hours_ago(3), "ok", 250)
    add_run(ledger, "nightly", hours_ago(2), "failed", 1500, error="exit status 3")
    add_run(ledger, "nightly", hours_ago(1), "timeout", 30_000)
    Controls(ledger, known=["yearly"]).pause("yearly", "test")
    html = text_of(page.get("/"))
    nightly = re.search(r'<tr data-job="nightly">.*?</tr>', html, re.S)
    assert nightly
    row = nightly.group(0)
    assert "At 02:30" in row and "Europe/London" in row and "Prunes sessions" in row
    assert "timeout" in row and "30.0 s" in row
    assert '<span class="bad">2</span>' in row  # failures in a row
    assert re.search(r"20\d\d-\d\d-\d\d 02:30:00 (GMT|BST)", row)  # next run, in the job's zone
    yearly = re.search(r'<tr data-job="yearly">.*?</tr>', html, re.S)
    assert yearly and "paused" in yearly.group(0) and "never ran" in yearly.group(0)


def test_the_page_reads_the_time_from_its_clock(ledger, schedule):
    clock = FakeClock(datetime(2026, 1, 1, 2, 0, tzinfo=UTC))
    mounted = mount(ledger, schedule, token=WRITE, clock=clock)
    html = text_of(mounted.get("/", headers={"Authorization": f"Bearer {WRITE}"}))
    nightly = re.search(r'<tr data-job="nightly">.*?</tr>', html, re.S)
    assert nightly and "2026-01-01 02:30:00 GMT" in nightly.group(0) and "in 30 min" in nightly.group(0)
    assert "Rendered 2026-01-01 02:00:00 UTC" in html


def test_job_page_pages_through_history(page, ledger):
    for i in range(30):
        add_run(ledger, "nightly", hours_ago(30 - i), "ok", 100 + i)
    first = text_of(page.get("/jobs/nightly"))
    assert first.count("<tr>") - 1 == 25  # 25 rows and the header
    assert 'href="/clock/jobs/nightly?page=2"' in first and 'rel="prev"' not in first
    second = text_of(page.get("/jobs/nightly?page=2"))
    assert second.count("<tr>") - 1 == 5
    assert 'rel="prev" href="/clock/jobs/nightly?page=1"' in second and 'rel="next"' not in second
    assert "129 ms" in first and "100 ms" in second  # newest first
    assert page.get("/jobs/nightly?page=bogus").status_code == 200


def test_job_page_draws_an_svg_chart_of_durations_and_outcomes(page, ledger):
    add_run(ledger, "nightly", hours_ago(3), "ok", 200)
    add_run(ledger, "nightly", hours_ago(2), "failed", 800, error="boom")
    add_run(ledger, "nightly", hours_ago(1), "ok", 400)
    html = text_of(page.get("/jobs/nightly"))
    svg = re.search(r'<svg class="chart".*?</svg>', html, re.S)
    assert svg, html
    assert [m for m in re.findall(r'data-status="(\w+)"', svg.group(0))] == ["ok", "failed", "ok"]
    assert "800 ms" in svg.group(0)  # the longest run labels the axis
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill', svg.group(0))]
    assert heights[1] > heights[2] > heights[0]


def test_job_page_of_an_unknown_job_is_404(page):
    assert page.get("/jobs/nope").status_code == 404


def test_clocks_section_names_the_leader_and_the_standbys(page, ledger):
    started = datetime.now(UTC) - timedelta(minutes=5)
    ledger.heartbeat("clock.1#aaaa", "leader", started)
    ledger.heartbeat("clock.2#bbbb", "standby", started)
    html = text_of(page.get("/"))
    assert '<strong class="leader-id">clock.1#aaaa</strong>' in html
    assert "1 standing by" in html and "clock.2#bbbb" in html
    ledger.forget_clock("clock.1#aaaa")
    assert "No clock is leading" in text_of(page.get("/"))


def test_pages_escape_what_they_show(page, ledger):
    add_run(ledger, "nightly", hours_ago(1), "failed", 5, error="<script>alert(1)</script>")
    html = text_of(page.get("/jobs/nightly"))
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "nonce-" in page.get("/").headers["Content-Security-Policy"]


@pytest.fixture
def tokens_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's tokens where production keeps them, in CLOCK_UI_TOKEN and CLOCK_UI_READ_TOKEN, which are
    masked as every ``*TOKEN*`` variable is. (The masker is process-wide: without this, the test below passed
    only after another test in the same process had put the tokens there, and failed when run alone.)"""
    monkeypatch.setenv("CLOCK_UI_TOKEN", WRITE)
    monkeypatch.setenv("CLOCK_UI_READ_TOKEN", READ)


def test_no_secret_from_the_schedule_is_ever_rendered(tokens_in_env, page, ledger):
    add_run(ledger, "import-feeds", hours_ago(1), "failed", 80, error=f"401 from the app: bad Bearer {CLOCK_TOKEN}")
    add_run(ledger, "nightly", hours_ago(1), "failed", 80, error=f"password authentication failed ({WRITE})")
    pages = [page.get(p) for p in ("/", "/jobs/import-feeds", "/jobs/nightly", "/jobs/yearly", "/login", "/jobs/x")]
    pages.append(page.act("run", "import-feeds"))
    seen = "".join(text_of(r) for r in pages)
    assert "***" in seen  # the error texts are there, masked
    for secret in (CLOCK_TOKEN, WRITE, READ):
        assert secret not in seen
    for spec in ("127.0.0.1:9", "/tasks/import-feeds", "DELETE FROM", "hello-from-yearly", "Authorization"):
        assert spec not in seen  # action specs are never rendered


def test_the_mount_keeps_the_host_app_and_builds_links_under_it(page):
    assert text_of(page.client.get("/")) == "the web app"
    html = text_of(page.get("/"))
    assert 'href="/clock/jobs/nightly"' in html and 'action="/clock/jobs/nightly/pause"' in html
    assert page.client.get("/clock").status_code in (200, 308)


def test_an_unreachable_state_database_is_a_503_page(schedule):
    mounted = mount(Ledger("postgresql://nobody:pw-123456@127.0.0.1:1/none"), schedule, token=WRITE)
    response = mounted.get("/", headers={"Authorization": f"Bearer {WRITE}"})
    assert response.status_code == 503
    assert "cannot read the state database" in text_of(response) and "pw-123456" not in text_of(response)


def test_a_broken_schedule_is_shown_not_raised(ledger, write_schedule):
    path = write_schedule("jobs:\n  x:\n    every: 10 minutes\n    sql: SELECT 1\n")
    mounted = mount(ledger, path, token=WRITE)
    html = text_of(mounted.get("/", headers={"Authorization": f"Bearer {WRITE}"}))
    assert "Schedule problem" in html and "jobs.x.every" in html


# ---- pauses in `next` ----------------------------------------------------------------------


def test_next_marks_paused_jobs_in_text_and_json(ledger, state_db, schedule, tmp_path):
    Controls(ledger, known=["nightly"]).pause("nightly", "test")
    env = {"CLOCK_DATABASE_URL": state_db, "CLOCK_TOKEN": CLOCK_TOKEN}
    text = run_cli("next", "-c", str(schedule), "--count", "1", env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "nightly: At 02:30 every day (Europe/London)  [paused]\n" in text.stdout
    assert "yearly: At 00:00 on January 1 (Europe/London)\n" in text.stdout
    data = json.loads(run_cli("next", "--json", "-c", str(schedule), env=env, cwd=tmp_path).stdout)
    paused = {job["id"]: job["paused"] for job in data["jobs"]}
    assert paused == {"nightly": True, "import-feeds": False, "yearly": False}


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/missing/state.db", "postgresql://nobody@127.0.0.1:1/none"])
def test_next_says_nothing_about_pauses_when_the_state_cannot_be_read(schedule, tmp_path, url):
    env = {"CLOCK_DATABASE_URL": url.format(tmp=tmp_path), "CLOCK_TOKEN": CLOCK_TOKEN}
    result = run_cli("next", "--json", "-c", str(schedule), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all("paused" not in job for job in json.loads(result.stdout)["jobs"])
    assert not (tmp_path / "missing").exists()  # reading state creates nothing


# ---- `clock.py ui` ---------------------------------------------------------------------------


def test_ui_command_serves_the_page_and_exits_0_on_sigterm(schedule, start_clock: Clocks):
    port = free_port()
    env = {"CLOCK_UI_TOKEN": WRITE, "CLOCK_TOKEN": CLOCK_TOKEN}
    ui = start_clock.start("ui", "--port", str(port), "-c", str(schedule), env=env, name="ui")
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {WRITE}"})
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200 and "nightly" in response.read().decode()
                    break
            except OSError:
                assert ui.alive() and time.monotonic() < deadline, ui.text()
                time.sleep(0.1)
    finally:
        assert ui.stop(timeout=10) == 0


def test_ui_command_reports_a_broken_schedule_as_check_does(write_schedule, tmp_path):
    path = write_schedule("jobs:\n  x:\n    every: 10 minutes\n    sql: SELECT 1\n")
    result = run_cli("ui", "-c", str(path), "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert "jobs.x.every: expected a duration" in result.stderr
