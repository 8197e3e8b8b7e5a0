"""Jobs added from the app where people look: ``status`` and ``next`` (real processes) and the status page, which
lists them as api jobs and may delete them (read-write role only)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import dynoclock
from dynoclock.state.ledger import Ledger
from tests.support.processes import run_cli
from tests.support.ui import mount

pytestmark = pytest.mark.usefixtures("no_ui_env")

SCHEDULE = """jobs:
  nightly:
    cron: "30 2 * * *"
    command: [echo, nightly]
"""
WRITE, READ = "write-token-0123456789", "read-token-0123456789"


@pytest.fixture(name="schedule")
def schedule_fixture(write_schedule: Callable[[str], Path]) -> Path:
    return write_schedule(SCHEDULE)


def test_status_and_next_list_api_jobs_with_their_origin(state_db: str, schedule: Path, tmp_path: Path) -> None:
    app = dynoclock.connect(state_db)
    app.add("digest-42", cron="0 9 * * *", timezone="Europe/Paris", python="myapp.jobs:digest", kwargs={"u": 42})
    app.at("2030-01-01T09:00:00Z", key="remind-7", command="true")
    done = run_cli("status", "--json", "-c", str(schedule), state=state_db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = {job["id"]: job for job in json.loads(done.stdout)["jobs"]}
    assert {job_id: job["origin"] for job_id, job in listed.items()} == {
        "nightly": "schedule", "digest-42": "api", "remind-7": "api",
    }  # fmt: skip
    assert listed["digest-42"]["next"].endswith("09:00:00+01:00") or listed["digest-42"]["next"].endswith("+02:00")
    assert listed["remind-7"]["next"] == "2030-01-01T09:00:00+00:00"
    text = run_cli("status", "-c", str(schedule), state=state_db, cwd=tmp_path).stdout
    assert re.search(r"digest-42 .*\[api\]", text) and re.search(r"remind-7 .*\[api\]", text)
    upcoming = run_cli("next", "-c", str(schedule), "--count", "1", state=state_db, cwd=tmp_path)
    assert upcoming.returncode == 0, upcoming.stderr
    assert "digest-42: At 09:00 every day (Europe/Paris)  [api]" in upcoming.stdout
    assert "remind-7: Once at 2030-01-01 09:00:00 UTC (UTC)  [api]" in upcoming.stdout


def test_the_page_lists_api_jobs_and_deletes_them_for_the_write_role(state_db: str, schedule: Path) -> None:
    ledger = Ledger(state_db)
    app = dynoclock.connect(state_db)
    app.add("digest-42", every="1h", command="true")
    reader = mount(ledger, schedule, token=WRITE, read_token=READ)
    assert reader.login(READ).status_code == 303
    html = reader.get("/").get_data(as_text=True)
    row = re.search(r'<tr data-job="digest-42">.*?</tr>', html, re.S)
    assert row and '<span class="pill">api</span>' in row.group(0)
    assert reader.post("/jobs/digest-42/delete", {"csrf": reader.csrf()}).status_code == 403
    assert [job["id"] for job in app.jobs() if job["origin"] == "api"] == ["digest-42"]

    writer = mount(ledger, schedule, token=WRITE, read_token=READ)
    assert writer.login(WRITE).status_code == 303
    html = writer.get("/").get_data(as_text=True)
    nightly = re.search(r'<tr data-job="nightly">.*?</tr>', html, re.S)
    assert nightly and "Delete" not in nightly.group(0)  # schedule.yaml's jobs are changed in schedule.yaml
    assert writer.act("delete", "nightly").status_code == 404
    page = writer.get("/jobs/digest-42")
    assert page.status_code == 200 and "Every 1h" in page.get_data(as_text=True)
    assert writer.act("pause", "digest-42").status_code == 303
    assert set(app.controls.paused()) == {"digest-42"}
    response = writer.act("delete", "digest-42")
    assert response.status_code == 303 and "notice=deleted" in response.headers["Location"]
    assert [job["id"] for job in app.jobs() if job["origin"] == "api"] == []
    assert writer.act("delete", "digest-42").status_code == 404
    assert 'data-job="digest-42"' not in writer.get("/").get_data(as_text=True)


def test_the_json_api_lists_creates_replaces_pauses_runs_and_deletes_with_the_write_token(
    state_db: str, schedule: Path
) -> None:
    page = mount(Ledger(state_db), schedule, token=WRITE, read_token=READ)
    write = {"Authorization": f"Bearer {WRITE}"}
    read = {"Authorization": f"Bearer {READ}"}
    spec = {"every": "1h", "http": {"url": "https://example.test/hook", "headers": {"Authorization": "Bearer tok-123"}}}
    created = page.client.post("/clock/api/jobs", json={"id": "hook", "spec": spec}, headers=write)
    assert created.status_code == 201, created.get_data(as_text=True)
    job = created.get_json()
    assert job["id"] == "hook" and job["origin"] == "api" and job["kind"] == "every"
    assert "tok-123" not in created.get_data(as_text=True)  # credentials in a spec are masked
    assert (
        page.client.post("/clock/api/jobs", json={"id": "hook", "spec": spec}, headers=write).status_code == 201
    )  # no change
    other = {"every": "2h", "command": "true"}
    conflict = page.client.post("/clock/api/jobs", json={"id": "hook", "spec": other}, headers=write)
    assert conflict.status_code == 422 and "replace" in conflict.get_json()["problems"][0]
    replaced = page.client.put("/clock/api/jobs/hook", json={"spec": other}, headers=write)
    assert replaced.status_code == 200 and replaced.get_json()["spec"] == other
    bad = page.client.post(
        "/clock/api/jobs", json={"id": "bad", "spec": {"cron": "0 9 32 * *", "command": "true"}}, headers=write
    )
    assert bad.status_code == 422
    assert bad.get_json()["problems"] == ["jobs.bad.cron: bad day-of-month '32': out of range 1-31"]

    listed = page.get("/api/jobs", headers=read).get_json()["jobs"]
    assert {(j["id"], j["origin"]) for j in listed} == {("hook", "api")}
    assert page.get("/api/jobs/hook", headers=read).get_json()["next"].endswith("Z")
    assert page.get("/api/jobs/ghost", headers=read).status_code == 404
    assert page.get("/api/jobs/hook/history?limit=5", headers=read).get_json() == {"runs": []}
    assert page.get("/api/openapi.json").get_json()["paths"]["/api/jobs/{job}"]["delete"]

    # The read-only token and a signed-in browser may only read; nobody unauthenticated.
    assert page.post("/api/jobs/hook/pause", headers=read).status_code == 403
    assert page.get("/api/jobs").status_code == 401
    assert page.login(WRITE).status_code == 303
    assert page.get("/api/jobs").status_code == 200  # the session cookie reads
    assert page.client.delete("/clock/api/jobs/hook").status_code == 403  # and never writes (no CSRF here)

    assert page.post("/api/jobs/hook/pause", headers=write).get_json() == {"id": "hook", "paused": True}
    assert page.get("/api/jobs/hook", headers=read).get_json()["paused"] is True
    assert page.post("/api/jobs/hook/resume", headers=write).status_code == 200
    assert page.post("/api/jobs/hook/run", headers=write).status_code == 202
    assert page.post("/api/jobs/nightly/pause", headers=write).status_code == 200  # the page's schedule.yaml job
    assert page.client.delete("/clock/api/jobs/nightly", headers=write).status_code == 404  # not the app's
    assert page.client.delete("/clock/api/jobs/hook", headers=write).status_code == 204
    assert page.get("/api/jobs/hook", headers=read).status_code == 404
    assert page.client.post("/clock/api/jobs", data="not json", headers=write).status_code == 400


def test_listings_page_the_pending_one_offs_with_a_cursor_and_a_count_of_the_rest(
    state_db: str, schedule: Path
) -> None:
    app = dynoclock.connect(state_db)
    app.add("digest", every="1h", command="true")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    # 25 one-offs, two at each instant: the cursor orders by (time, id), so a page may end between the two.
    app.at_many([{"when": start + timedelta(minutes=n // 2), "key": f"r-{n:02}", "command": "true"} for n in range(25)])
    first = app.page(limit=10)
    assert [job["id"] for job in first["jobs"]] == ["digest", *(f"r-{n:02}" for n in range(10))]
    assert first["rest"] == 15 and first["after"] is not None
    seen, page = [job["id"] for job in first["jobs"][1:]], first
    while page["after"] is not None:
        page = app.page(limit=10, after=page["after"])
        assert all(job["kind"] == "at" for job in page["jobs"])  # the recurring ones on the first page only
        seen += [job["id"] for job in page["jobs"]]
        assert page["rest"] == 25 - len(seen)
    assert seen == [f"r-{n:02}" for n in range(25)]
    assert [job["id"] for job in app.jobs(limit=3)] == ["digest", "r-00", "r-01", "r-02"]
    with pytest.raises(ValueError, match="not a cursor"):
        app.page(after="yesterday")

    api = mount(Ledger(state_db), schedule, token=WRITE, read_token=READ)
    read = {"Authorization": f"Bearer {READ}"}
    body = api.get("/api/jobs?limit=20", headers=read).get_json()
    assert len(body["jobs"]) == 21 and body["rest"] == 5
    body = api.get(f"/api/jobs?limit=20&after={body['after']}", headers=read).get_json()  # URL-safe as it is
    assert [job["id"] for job in body["jobs"]] == [f"r-{n:02}" for n in range(20, 25)]
    assert body["rest"] == 0 and body["after"] is None
    assert api.get("/api/jobs?limit=0", headers=read).status_code == 400
    assert api.get("/api/jobs?after=nonsense", headers=read).status_code == 400
