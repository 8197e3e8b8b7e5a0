"""``history``, ``status`` and ``run JOB`` through the real CLI, on SQLite and Postgres state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import SCHEMA_VERSION, meta
from tests.support.history import finish_run, start_run
from tests.support.logs import parse_ts
from tests.support.processes import run_cli, write_schedule
from tests.support.state import forget_engine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REQUIRED = {"job", "scheduled_for", "started_at", "finished_at", "status", "attempt", "error", "clock"}


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def seed(store: Ledger) -> None:
    store.claim("ok-run", "tick", minutes(1), "clock.1#aaaa")
    start_run(store, "ok-run", 1, "clock.1#aaaa")
    finish_run(store, "ok-run", "ok", None, 12)
    store.claim("failed-run", "tick", minutes(2), "clock.1#aaaa")
    start_run(store, "failed-run", 1, "clock.1#aaaa")
    start_run(store, "failed-run", 2, "clock.2#bbbb")
    finish_run(store, "failed-run", "failed", "expect_status=2xx, got 503", 30)
    store.record("tock", minutes(3), "missed", "clock.2#bbbb", "no clock was leading within misfire_grace")


def history(tmp_path: Path, state: str, *args: str) -> list[dict[str, Any]]:
    done = run_cli("history", "--json", *args, cwd=tmp_path, state=state)
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
    return runs


def assert_iso_utc(value: str) -> None:
    assert value.endswith("Z"), value
    assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


def test_history_json_lists_runs_newest_first_with_iso_utc_times(tmp_path: Path, store: Ledger) -> None:
    seed(store)
    runs = history(tmp_path, store.url)
    assert [(r["job"], r["scheduled_for"]) for r in runs] == [
        ("tock", "2026-03-01T12:03:00Z"),
        ("tick", "2026-03-01T12:02:00Z"),
        ("tick", "2026-03-01T12:01:00Z"),
    ]
    for run in runs:
        assert set(run) >= REQUIRED
        for key in ("scheduled_for", "finished_at"):
            assert_iso_utc(run[key])
    missed, failed, ok = runs
    assert (ok["status"], ok["attempt"], ok["error"], ok["clock"], ok["duration_ms"]) == (
        "ok", 1, None, "clock.1#aaaa", 12,
    )  # fmt: skip
    assert parse_ts(ok["scheduled_for"]) < parse_ts(ok["started_at"]) <= parse_ts(ok["finished_at"])
    assert (failed["status"], failed["attempt"], failed["error"], failed["clock"]) == (
        "failed", 2, "expect_status=2xx, got 503", "clock.2#bbbb",
    )  # fmt: skip
    assert (missed["status"], missed["started_at"], missed["attempt"]) == ("missed", None, 0)
    assert missed["error"] == "no clock was leading within misfire_grace"


def test_history_filters_by_job_and_honours_limit(tmp_path: Path, store: Ledger) -> None:
    seed(store)
    assert [r["scheduled_for"] for r in history(tmp_path, store.url, "--job", "tick")] == [
        "2026-03-01T12:02:00Z",
        "2026-03-01T12:01:00Z",
    ]
    assert [r["job"] for r in history(tmp_path, store.url, "--limit", "1")] == ["tock"]
    assert [r["scheduled_for"] for r in history(tmp_path, store.url, "--job", "tick", "--limit", "1")] == [
        "2026-03-01T12:02:00Z"
    ]


def test_history_as_a_table(tmp_path: Path, store: Ledger) -> None:
    seed(store)
    lines = run_cli("history", cwd=tmp_path, state=store.url).stdout.splitlines()
    assert lines[0].split() == ["SCHEDULED_FOR", "JOB", "STATUS", "ATTEMPT", "DURATION", "CLOCK", "ERROR"]
    assert "2026-03-01 12:03:00Z" in lines[1] and "missed" in lines[1]
    assert "expect_status=2xx, got 503" in lines[2]


def test_status_counts_failures_in_a_row_and_run_job_records_manual_runs(tmp_path: Path, state_db: str) -> None:
    schedule = str(
        write_schedule(
            tmp_path,
            "jobs:\n"
            "  flaky:\n    every: 1h\n    command: [sh, -c, 'test -f ok.flag']\n"  # cwd: tmp_path
            "  digest:\n    cron: \"30 17 * * mon-fri\"\n    timezone: America/New_York\n    command: ['true']\n",
        )
    )

    def status() -> dict[str, dict[str, Any]]:
        done = run_cli("status", "-c", schedule, "--json", cwd=tmp_path, state=state_db)
        assert done.returncode == 0, done.stderr
        return {job["id"]: job for job in json.loads(done.stdout)["jobs"]}

    before = datetime.now(UTC)
    for _ in range(2):
        done = run_cli("run", "flaky", "-c", schedule, cwd=tmp_path, state=state_db)
        assert done.returncode == 1
        assert "flaky: failed (exit=1)" in done.stdout
    jobs = status()
    flaky, digest = jobs["flaky"], jobs["digest"]
    assert (flaky["schedule"], flaky["timezone"], flaky["failures_in_a_row"]) == ("Every 1h", "UTC", 2)
    assert flaky["last"]["status"] == "failed" and flaky["last"]["reason"] == "manual"
    upcoming = datetime.fromisoformat(flaky["next"])
    assert upcoming > before and (upcoming.minute, upcoming.second) == (0, 0)
    assert (digest["schedule"], digest["timezone"]) == ("At 17:30 on Monday through Friday", "America/New_York")
    assert (digest["last"], digest["failures_in_a_row"]) == (None, 0)
    next_digest = datetime.fromisoformat(digest["next"])
    assert (next_digest.hour, next_digest.minute, next_digest.weekday() < 5) == (17, 30, True)

    text = run_cli("status", "-c", schedule, cwd=tmp_path, state=state_db).stdout.splitlines()
    assert text[0].split() == ["JOB", "SCHEDULE", "NEXT", "LAST", "FAILURES"]
    flaky_line = next(line for line in text if line.startswith("flaky"))
    assert "Every 1h (UTC)" in flaky_line and "failed" in flaky_line and flaky_line.split()[-1] == "2"
    digest_line = next(line for line in text if line.startswith("digest"))
    assert "At 17:30 on Monday through Friday (America/New_York)" in digest_line and "never ran" in digest_line

    (tmp_path / "ok.flag").touch()
    done = run_cli("run", "flaky", "-c", schedule, cwd=tmp_path, state=state_db)
    assert done.returncode == 0 and "flaky: ok" in done.stdout, done.stderr
    flaky = status()["flaky"]
    assert (flaky["failures_in_a_row"], flaky["last"]["status"]) == (0, "ok")

    runs = history(tmp_path, state_db, "--job", "flaky")
    assert [r["status"] for r in runs] == ["ok", "failed", "failed"]
    for run in runs:
        assert (run["reason"], run["attempt"]) == ("manual", 1)
        assert run["clock"].endswith(":manual")
        assert before <= parse_ts(run["scheduled_for"]) <= parse_ts(run["started_at"])
    for key in ("scheduled_for", "started_at", "finished_at"):
        assert_iso_utc(runs[0][key])
    ledger = Ledger(state_db)
    assert ledger.last_slots() == {}  # manual runs are not slots: catch-up ignores them
    forget_engine(state_db)


def test_state_defaults_to_an_sqlite_file_under_the_working_directory(tmp_path: Path) -> None:
    schedule = write_schedule(tmp_path, "jobs:\n  hello:\n    every: 1d\n    command: [echo, hello]\n")
    done = run_cli("run", "hello", "-c", str(schedule), cwd=tmp_path)  # no CLOCK_DATABASE_URL, no DATABASE_URL
    assert done.returncode == 0, done.stderr
    assert "hello: ok" in done.stdout
    assert (tmp_path / "state" / "clock.db").is_file()
    url = f"sqlite:///{tmp_path / 'state' / 'clock.db'}"
    try:
        assert [run.job for run in Ledger(url).history()] == ["hello"]
    finally:
        forget_engine(url)


@pytest.mark.postgres
def test_heroku_database_url_with_the_postgres_scheme_is_read(tmp_path: Path, pg_schema_url: str) -> None:
    ledger = Ledger(pg_schema_url)
    ledger.ensure_schema()
    seed(ledger)
    heroku = pg_schema_url.replace("postgresql://", "postgres://", 1)
    assert len(history(tmp_path, heroku)) == 3
    done = run_cli("history", "--json", env={"DATABASE_URL": heroku}, cwd=tmp_path)  # the fallback variable
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["runs"]) == 3


def test_history_of_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = run_cli("history", cwd=tmp_path, state="postgresql://postgres:s3cret@127.0.0.1:1/x")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("history: cannot reach the state database postgresql://postgres:")
    assert "s3cret" not in done.stderr


def test_history_refuses_a_state_database_with_a_newer_schema(tmp_path: Path, store: Ledger) -> None:
    with store.engine.begin() as conn:
        conn.execute(meta.update().values(value=str(SCHEMA_VERSION + 1)))
    done = run_cli("history", cwd=tmp_path, state=store.url)
    assert done.returncode == 1
    assert f"schema {SCHEMA_VERSION + 1}, newer than this clock's {SCHEMA_VERSION}" in done.stderr
    assert "Traceback" not in done.stderr
