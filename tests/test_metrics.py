"""/metrics of the status page: runs recorded by a real clock process, scraped and parsed by prometheus_client."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import from_db
from dynoclock.state.totals import FINAL
from tests.support.processes import Clocks, wait_until
from tests.support.state import all_runs
from tests.support.ui import mount

pytestmark = pytest.mark.usefixtures("no_ui_env")
Write = Callable[[str], Path]
TOKEN, READ = "write-token-metrics-1", "read-token-metrics-2"
SCHEDULE = """
jobs:
  tick:
    every: 1s
    command: [sh, -c, 'echo ok']
  broken:
    every: 1s
    command: [sh, -c, 'exit 3']
  later:
    cron: "0 3 * * *"
    command: [sh, -c, 'echo later']
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def finished(store: Ledger, job: str) -> list[Any]:
    return [run for run in all_runs(store, job) if run.status in FINAL]


def test_metrics_of_a_real_clock_parse_and_say_what_the_ledger_holds(
    write_schedule: Write, clocks: Clocks, state_db: str
) -> None:
    path = write_schedule(SCHEDULE)
    clock = clocks(path)
    store = Ledger(state_db)
    store.ensure_schema()  # polled before the clock made it
    wait_until(lambda: len(finished(store, "tick")) >= 2 and len(finished(store, "broken")) >= 2, "rows")
    page = mount(store, path, token=TOKEN, read_token=READ)
    response = page.get("/metrics", headers={"Authorization": f"Bearer {READ}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    found = samples(response.get_data(as_text=True))
    clock.stop()

    ok_runs = found[("dynoclock_runs_total", (("job", "tick"), ("status", "ok")))]
    failed_runs = found[("dynoclock_runs_total", (("job", "broken"), ("status", "failed")))]
    assert ok_runs >= 2 and failed_runs >= 2
    # At most what the ledger held a moment later, and no fewer than it held before the scrape.
    assert ok_runs <= len([r for r in all_runs(store, "tick") if r.status == "ok"])
    durations = found[("dynoclock_run_duration_seconds_count", (("job", "tick"),))]
    assert durations == ok_runs
    assert found[("dynoclock_run_duration_seconds_bucket", (("job", "tick"), ("le", "+Inf")))] == durations
    assert found[("dynoclock_run_lateness_seconds_count", (("job", "tick"),))] == ok_runs
    assert found[("dynoclock_consecutive_failures", (("job", "broken"),))] >= 2
    assert found[("dynoclock_consecutive_failures", (("job", "tick"),))] == 0
    assert found[("dynoclock_job_paused", (("job", "tick"),))] == 0
    last_ok = max(from_db(r.finished_at) for r in all_runs(store, "tick") if r.status == "ok" and r.finished_at)
    assert found[("dynoclock_last_success_timestamp_seconds", (("job", "tick"),))] <= last_ok.timestamp()
    assert ("dynoclock_last_success_timestamp_seconds", (("job", "broken"),)) not in found
    next_3am = found[("dynoclock_next_run_timestamp_seconds", (("job", "later"),))]
    assert datetime.fromtimestamp(next_3am, UTC).hour == 3
    assert datetime.fromtimestamp(next_3am, UTC) - datetime.now(UTC) <= timedelta(days=1)
    leaders = {labels: v for (name, labels), v in found.items() if name == "dynoclock_leader"}
    assert list(leaders.values()) == [1.0]
    assert found[("dynoclock_clocks", (("role", "leader"),))] == 1


def test_counters_survive_pruning(write_schedule: Write, clocks: Clocks, state_db: str) -> None:
    path = write_schedule(SCHEDULE)
    clock = clocks(path)
    store = Ledger(state_db)
    store.ensure_schema()  # polled before the clock made it
    wait_until(lambda: len(finished(store, "tick")) >= 2, "rows", timeout=60)
    clock.stop()
    page = mount(store, path, token=TOKEN)
    before = samples(page.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True))
    while store.prune(datetime.now(UTC) + timedelta(days=1)):
        pass
    assert all_runs(store, "tick") == []
    page = mount(store, path, token=TOKEN)  # a new page: nothing cached
    after = samples(page.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True))
    key = ("dynoclock_runs_total", (("job", "tick"), ("status", "ok")))
    assert after[key] == before[key] >= 2


def test_metrics_need_the_pages_access(write_schedule: Write, tmp_path: Path) -> None:
    store = Ledger(f"sqlite:///{tmp_path}/state.db")
    path = write_schedule(SCHEDULE)
    page = mount(store, path, token=TOKEN, read_token=READ)
    assert page.get("/metrics").status_code == 401
    assert page.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert page.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert mount(store, path).get("/metrics").status_code == 403  # access not configured: off
    assert mount(store, path, auth=lambda environ: None).get("/metrics").status_code == 403
    text = page.get("/metrics", headers={"Authorization": f"Bearer {READ}"}).get_data(as_text=True)
    assert "dynoclock_job_paused" in text and TOKEN not in text and "sh -c" not in text
