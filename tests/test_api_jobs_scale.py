"""bench/million.py's correctness check at a size CI runs, with two real clock processes on SQLite and Postgres:
20,000 pending one-offs added from the app, 500 of them due within the same half-minute, the rest over the next
days. Every due one runs exactly once and none early; nothing else runs. The timings are the benchmark's."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import dynoclock
from dynoclock.state.ledger import Ledger
from tests.support.processes import Clocks, wait_until
from tests.support.state import all_runs

PENDING = 20_000
DUE = 500
WINDOW = timedelta(seconds=30)  # the due ones, evenly over it
SCHEDULE = "jobs:\n  far:\n    at: 2099-01-01T00:00:00Z\n    command: 'true'\n"


def record(path: str, n: int) -> None:
    """The one-offs' job: appends ``n`` and the time it started (one O_APPEND write: whole lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def recorded(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    return [(int(n), float(at)) for n, at in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.slow
def test_500_due_among_20000_pending_run_once_each_with_two_clocks(
    clocks: Clocks, write_schedule: Callable[[str], Path], state_db: str, tmp_path: Path
) -> None:
    schedule = write_schedule(SCHEDULE)
    first, second = clocks(schedule), clocks(schedule)
    first.wait_for("clock.ready"), second.wait_for("clock.ready")
    record_path = tmp_path / "ran.txt"
    app = dynoclock.connect(state_db)

    def item(n: int, when: datetime) -> dict[str, object]:
        return {"when": when, "key": f"m-{n}", "python": "tests.test_api_jobs_scale:record",
                "args": [str(record_path), n]}  # fmt: skip

    far = PENDING - DUE
    later = datetime.now(UTC) + timedelta(minutes=30)
    for start in range(0, far, 5000):  # the far ones first, over three days
        app.at_many([item(n, later + timedelta(days=3) * n / far) for n in range(start, min(far, start + 5000))])
    minute = datetime.now(UTC) + timedelta(seconds=5)
    due = {far + i: minute + WINDOW * i / DUE for i in range(DUE)}
    app.at_many([item(n, when) for n, when in due.items()])
    ledger = Ledger(state_db)
    wait_until(lambda: {n for n, _ in recorded(record_path)} >= set(due), "every due one-off recorded", timeout=120,
               details=lambda: first.text()[-2000:] + second.text()[-2000:])  # fmt: skip
    wait_until(lambda: sum(run.status == "ok" for run in all_runs(ledger)) >= DUE, "every run's row final")
    time.sleep(2)  # a second run of any would show by now
    runs = recorded(record_path)
    assert Counter(n for n, _ in runs) == Counter(set(due)), "each due one-off once, nothing else"
    early = [(n, at, due[n].timestamp()) for n, at in runs if at < due[n].timestamp()]
    assert not early
    rows = all_runs(ledger)
    assert sorted(run.job for run in rows) == sorted(f"m-{n}" for n in due)  # one row each, no other job's
    assert all(run.status == "ok" and run.scheduled_for == due[int(run.job[2:])] for run in rows)
    assert all(run.started_at is not None and run.started_at >= run.scheduled_for for run in rows)
    assert len(app.store.one_offs(None, datetime(9999, 1, 1))) == far  # the others still pending
