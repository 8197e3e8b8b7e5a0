"""SQLite: the clock daemon's commits run no checkpoint of the WAL, its leader's rounds do (state/checkpoint.py),
so that no run's claim or start write waits for the disk's flush. Real SQLite files and a real clock process."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynoclock.config.loader import load_schedule
from dynoclock.daemon.leadership import Leadership
from dynoclock.observe.logs import EventLog
from dynoclock.run.runner import Runner
from dynoclock.state.checkpoint import (
    CHECKPOINT_PAGES,
    FALLBACK_EVERY,
    WAL_INDEX_VERSION,
    WalCheckpoints,
    pending_pages,
)
from dynoclock.state.ledger import Ledger
from tests.jobs_for_tests import fill_state_wal
from tests.support.clock import FakeClock
from tests.support.processes import Clocks, wait_until, write_schedule
from tests.support.state import forget_engine

PAGES = 1500  # fill_state_wal's default: past CHECKPOINT_PAGES


@pytest.fixture(name="sqlite_ledger")
def sqlite_ledger_fixture(tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path / 'daemon.db'}"
    ledger = Ledger(url)
    ledger.ensure_schema()
    yield ledger
    forget_engine(url)


def scratch_rows_in_the_file_alone(database: str, folder: Path) -> int:
    """Rows of the scratch table in the database file itself, without its WAL: what a checkpoint copied."""
    copy = folder / "copy.db"
    shutil.copyfile(database, copy)
    with sqlite3.connect(copy) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'scratch'").fetchone():
            return 0
        return int(conn.execute("SELECT count(*) FROM scratch").fetchone()[0])


def test_the_daemons_commits_leave_the_wal_to_its_leaders_round_which_copies_it_into_the_database(
    tmp_path: Path, sqlite_ledger: Ledger
) -> None:
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    try:
        Ledger(app_url).ensure_schema()
        app = json.loads(fill_state_wal(app_url))  # anyone else's connection: SQLite's default, checkpointed at once
        assert app["autocheckpoint"] == CHECKPOINT_PAGES and app["pending"] < CHECKPOINT_PAGES
    finally:
        forget_engine(app_url)

    sqlite_ledger.checkpoint_in_rounds()
    database = sqlite_ledger.sqlite_path
    assert database is not None
    daemon = json.loads(fill_state_wal(sqlite_ledger.url))
    assert daemon["autocheckpoint"] == 0 and daemon["pending"] >= PAGES  # the commit left it all in the WAL
    assert scratch_rows_in_the_file_alone(database, tmp_path) == 0

    sqlite_ledger.leader_round("me", datetime.now(UTC))
    assert sqlite_ledger.checkpoint() is True
    assert pending_pages(database) == 0
    assert scratch_rows_in_the_file_alone(database, tmp_path) == PAGES
    assert sqlite_ledger.checkpoint() is False  # nothing waits: no checkpoint, no flush

    checkpoints = sqlite_ledger.checkpoints
    sqlite_ledger.checkpoint_in_rounds()  # twice: the same checkpoints, no second listener
    assert sqlite_ledger.checkpoints is checkpoints


def test_pages_waiting_are_read_from_the_wal_index_and_a_torn_or_missing_one_reads_as_unknown(
    tmp_path: Path, sqlite_ledger: Ledger
) -> None:
    database = sqlite_ledger.sqlite_path
    assert database is not None
    with sqlite3.connect(database) as conn:  # a connection of SQLite's own, outside the clock's code
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE pages (blob BLOB)")
        conn.execute("INSERT INTO pages SELECT randomblob(3000) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)")
        conn.commit()
        waiting = pending_pages(database)
        busy, in_wal, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and waiting == in_wal == copied >= 3  # none copied before: every page in the WAL waited
        assert pending_pages(database) == 0

    assert pending_pages(str(tmp_path / "none.db")) is None
    header = struct.pack("=IIIBBHII", WAL_INDEX_VERSION, 0, 1, 1, 0, 4096, 7, 0).ljust(48, b"\0")
    shm = tmp_path / "torn.db-shm"
    shm.write_bytes(header + header + struct.pack("=I", 2))
    assert pending_pages(str(tmp_path / "torn.db")) == 5  # the layout read: mxFrame 7, nBackfill 2
    shm.write_bytes(header + header.replace(struct.pack("=I", 7), struct.pack("=I", 9), 1) + struct.pack("=I", 2))
    assert pending_pages(str(tmp_path / "torn.db")) is None  # the two copies differ: a writer was changing it
    shm.write_bytes(header[:40])
    assert pending_pages(str(tmp_path / "torn.db")) is None


def test_where_the_wal_index_cannot_be_read_the_leader_checkpoints_once_a_minute(tmp_path: Path) -> None:
    clock = FakeClock()
    checkpoints = WalCheckpoints(str(tmp_path / "nothing.db"), clock)
    assert not checkpoints.due()
    clock.advance(FALLBACK_EVERY - 1)
    assert not checkpoints.due()
    clock.advance(1)
    assert checkpoints.due()


def test_a_checkpoint_that_fails_is_said_once_until_one_succeeds_and_the_next_round_checkpoints_again(
    tmp_path: Path, sqlite_ledger: Ledger
) -> None:
    schedule = load_schedule(str(write_schedule(tmp_path, "jobs:\n  tick:\n    every: 1h\n    command: ['true']\n")))
    stream = io.StringIO()
    events = EventLog(stream, fmt="json")
    leadership = Leadership(schedule, sqlite_ledger, Runner(schedule, events, "me", sqlite_ledger), events, "me")
    sqlite_ledger.checkpoint_in_rounds()
    database = sqlite_ledger.sqlite_path
    assert database is not None

    def round_connection_lost() -> None:  # the round's SQLite connection closed under it: its next call fails
        sqlite_ledger.leader_round("me", datetime.now(UTC))
        sqlite_ledger._round._connection().driver_connection.close()  # type: ignore[union-attr]

    # Another connection stays open, idle: closing the last one would make SQLite checkpoint the WAL itself.
    other = sqlite_ledger.engine.connect()
    fill_state_wal(sqlite_ledger.url)
    for _ in range(2):
        round_connection_lost()
        leadership._checkpoint()
    assert (pending_pages(database) or 0) >= PAGES  # not checkpointed: both tries failed
    leadership._checkpoint()  # a new connection: checkpointed
    assert pending_pages(database) == 0
    fill_state_wal(sqlite_ledger.url)
    round_connection_lost()
    leadership._checkpoint()
    said = [e for e in map(json.loads, stream.getvalue().splitlines()) if e["event"] == "ledger.checkpoint_failed"]
    assert len(said) == 2 and all("closed database" in e["error"] for e in said), said
    other.close()


def test_a_clock_process_commits_with_no_checkpoint_and_its_leader_checkpoints_within_a_round(
    tmp_path: Path, start_clock: Clocks
) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    schedule = write_schedule(
        tmp_path,
        f"jobs:\n  fill:\n    at: '{at}'\n    python: tests.jobs_for_tests:fill_state_wal\n"
        f"    kwargs: {{url: '{start_clock.state}'}}\n",
    )
    clock = start_clock(schedule)
    report = json.loads(clock.wait_for("run.ok", job="fill")["detail"])
    assert report["autocheckpoint"] == 0 and report["pending"] >= PAGES  # the clock's own engine: no checkpoint
    database = start_clock.state.removeprefix("sqlite:///")

    def checkpointed() -> bool:
        pending = pending_pages(database)  # None: read while a writer changed the index; look again
        return pending is not None and pending < CHECKPOINT_PAGES

    wait_until(checkpointed, "the leader's checkpoint", details=clock.text)
    assert scratch_rows_in_the_file_alone(database, tmp_path) == PAGES
    assert clock.stop() == 0
    assert not clock.events("ledger.checkpoint_failed")
