"""The batched history writer (state.writer.RunWriter) against a real store: batches, order, flush, outages."""

from __future__ import annotations

import io
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dynoclock.observe.logs import EventLog
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim, Run
from dynoclock.state.writer import RunWriter
from dynoclock.timesource import SYSTEM
from tests.support.postgres import POSTGRES_URL, schema_of
from tests.support.proxy import Proxy
from tests.support.state import all_runs, forget_engine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Events(EventLog):
    """An EventLog that keeps what was emitted, in order, and lets a test wait for an event."""

    def __init__(self) -> None:
        super().__init__(stream=io.StringIO())
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._seen_cond = threading.Condition()

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        super().emit(event, level, **fields)
        with self._seen_cond:
            self.seen.append((event, {"level": level, **fields}))
            self._seen_cond.notify_all()

    def names(self, prefix: str = "") -> list[str]:
        with self._seen_cond:
            return [name for name, _ in self.seen if name.startswith(prefix)]

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        with self._seen_cond:
            found = self._seen_cond.wait_for(lambda: any(n == event for n, _ in self.seen), timeout)
            assert found, f"no {event} event; saw {self.names()}"
            return next(fields for name, fields in self.seen if name == event)


class GatedLedger(Ledger):
    """A real Ledger whose batch writes the test can hold at the door, and whose batches it can see."""

    def __init__(self, url: str):
        super().__init__(url)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[dict[str, dict[str, Any]]] = []

    def update_runs(self, updates: dict[str, dict[str, Any]]) -> None:
        self.batches.append({run_id: dict(values) for run_id, values in updates.items()})
        self.entered.set()
        assert self.gate.wait(60)
        super().update_runs(updates)


def claimed(store: Ledger, count: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(count)]
    assert store.claim_many([Claim(run_id, "tick", at(60 * i), "clock-a") for i, run_id in enumerate(ids)])
    return ids


def rows(store: Ledger) -> dict[str, Run]:
    return {r.run_id: r for r in all_runs(store)}


def hold_first_batch(ledger: GatedLedger, recorder: RunWriter, run_id: str) -> None:
    """Queue one update and keep the writer inside its write, so what is queued next forms one batch."""
    ledger.gate.clear()
    recorder.started(run_id, 1, at(1))
    assert ledger.entered.wait(30)


# ---- batches and order --------------------------------------------------------------------


def test_started_and_finished_of_many_runs_are_written_in_batches(store: Ledger) -> None:
    ledger = GatedLedger(store.url)
    recorder = RunWriter(ledger, Events(), SYSTEM, "clock-a")
    ids = claimed(store, 30)
    hold_first_batch(ledger, recorder, ids[0])
    for i, run_id in enumerate(ids):
        recorder.started(run_id, 1, at(i))
        recorder.finished(run_id, "ok" if i % 2 else "failed", None if i % 2 else f"exit={i}", 10 * i, at(i + 0.5))
    ledger.gate.set()
    assert recorder.flush(30) is True
    assert [len(batch) for batch in ledger.batches] == [1, 30]  # 60 updates, one commit after the first
    got = rows(store)
    for i, run_id in enumerate(ids):
        r = got[run_id]
        assert (r.status, r.attempt, r.clock, r.started_at, r.finished_at, r.error, r.duration_ms) == (
            "ok" if i % 2 else "failed", 1, "clock-a", at(i), at(i + 0.5), None if i % 2 else f"exit={i}",
            10 * i,
        )  # fmt: skip


def test_within_one_batch_the_later_update_of_a_run_wins(store: Ledger) -> None:
    ledger = GatedLedger(store.url)
    recorder = RunWriter(ledger, Events(), SYSTEM, "clock-a")
    retried, failed, first = claimed(store, 3)
    hold_first_batch(ledger, recorder, first)
    recorder.finished(first, "ok", "", 5, at(2))
    recorder.started(retried, 1, at(10))
    recorder.finished(retried, "failed", "exit=1", 100, at(11))
    recorder.started(retried, 2, at(20))  # the retry started after the failure: it is running
    recorder.started(failed, 1, at(30))
    recorder.finished(failed, "timeout", "timeout=1s exceeded", 1000, at(31))
    ledger.gate.set()
    assert recorder.flush(30) is True
    assert len(ledger.batches) == 2
    got = rows(store)
    r = got[retried]
    assert (r.status, r.attempt, r.clock, r.started_at, r.finished_at, r.error, r.duration_ms) == (
        "running", 2, "clock-a", at(20), None, None, None,
    )  # fmt: skip
    r = got[failed]
    assert (r.status, r.attempt, r.started_at, r.finished_at, r.error, r.duration_ms) == (
        "timeout", 1, at(30), at(31), "timeout=1s exceeded", 1000,
    )  # fmt: skip
    r = got[first]
    assert (r.status, r.started_at, r.finished_at, r.error, r.duration_ms) == ("ok", at(1), at(2), None, 5)


def test_flush_returns_true_only_once_everything_queued_is_written(store: Ledger) -> None:
    ledger = GatedLedger(store.url)
    recorder = RunWriter(ledger, Events(), SYSTEM, "clock-a")
    assert recorder.flush(5) is True  # nothing queued
    (run_id,) = claimed(store, 1)
    hold_first_batch(ledger, recorder, run_id)
    recorder.finished(run_id, "ok", None, 3, at(2))
    assert recorder.flush(0.2) is False  # the write is held: not everything is written
    assert rows(store)[run_id].status == "claimed"
    ledger.gate.set()
    assert recorder.flush(30) is True
    r = rows(store)[run_id]  # written by the time flush returns
    assert (r.status, r.started_at, r.finished_at, r.duration_ms) == ("ok", at(1), at(2), 3)


# ---- the database away ----------------------------------------------------------------------


@pytest.mark.postgres
def test_history_is_kept_while_postgres_is_unreachable_and_written_once_it_is_back(pg_schema_url: str) -> None:
    upstream = make_url(POSTGRES_URL)
    proxy = Proxy(upstream.host or "127.0.0.1", upstream.port or 5432).start()
    via_proxy = upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    url = f"{via_proxy.split('?')[0]}?options=-csearch_path%3D{schema_of(pg_schema_url)}"
    direct = Ledger(pg_schema_url)
    try:
        ledger = Ledger(url)
        ledger.ensure_schema()
        events = Events()
        recorder = RunWriter(ledger, events, SYSTEM, "clock-a")
        ids = claimed(ledger, 5)
        for i, run_id in enumerate(ids):
            recorder.started(run_id, 1, at(i))
        assert recorder.flush(30) is True

        proxy.cut()  # the connections in the pool die, new ones are refused
        for i, run_id in enumerate(ids):
            recorder.finished(run_id, "ok", None, i, at(i + 0.5))
        error = events.wait_for("ledger.error")
        assert (error["operation"], error["level"]) == ("record", "warning")
        assert recorder.flush(0.2) is False
        assert {r.status for r in rows(direct).values()} == {"running"}  # nothing written meanwhile

        proxy.restore()
        assert recorder.flush(60) is True
        assert events.names("ledger.") == ["ledger.error", "ledger.reachable"]
        got = rows(direct)
        assert [(got[i].status, got[i].started_at, got[i].finished_at, got[i].duration_ms) for i in ids] == [
            ("ok", at(i), at(i + 0.5), i) for i in range(5)
        ]
    finally:
        proxy.cut()
        forget_engine(url)


def test_history_is_kept_while_the_sqlite_file_is_away_and_written_once_it_is_back(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    url = f"sqlite:///{folder / 'state.db'}"
    try:
        ledger = Ledger(url)
        ledger.ensure_schema()
        events = Events()
        recorder = RunWriter(ledger, events, SYSTEM, "clock-a")
        ids = claimed(ledger, 5)
        for i, run_id in enumerate(ids):
            recorder.started(run_id, 1, at(i))
        assert recorder.flush(30) is True

        # The volume goes away: the file is no longer where the engine opens it, and no connection stays open.
        os.rename(folder, tmp_path / "away")
        ledger.engine.dispose()
        for i, run_id in enumerate(ids):
            recorder.finished(run_id, "failed", f"exit={i}", i, at(i + 0.5))
        error = events.wait_for("ledger.error")
        assert error["operation"] == "record" and 1 <= error["queued"] <= 5
        assert recorder.flush(0.2) is False
        assert not folder.exists()  # the writer did not make a new, empty database instead

        os.rename(tmp_path / "away", folder)
        assert recorder.flush(60) is True
        assert events.names("ledger.") == ["ledger.error", "ledger.reachable"]
        got = rows(ledger)
        assert [(got[i].status, got[i].error, got[i].finished_at, got[i].duration_ms) for i in ids] == [
            ("failed", f"exit={i}", at(i + 0.5), i) for i in range(5)
        ]
    finally:
        forget_engine(url)


def test_updates_queued_during_an_outage_keep_their_order(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    url = f"sqlite:///{folder / 'state.db'}"
    try:
        ledger = Ledger(url)
        ledger.ensure_schema()
        events = Events()
        recorder = RunWriter(ledger, events, SYSTEM, "clock-a")
        (run_id,) = claimed(ledger, 1)
        os.rename(folder, tmp_path / "away")
        ledger.engine.dispose()
        recorder.started(run_id, 1, at(1))
        events.wait_for("ledger.error")  # the first batch failed and went back to the queue ...
        recorder.finished(run_id, "failed", "exit=1", 10, at(2))  # ... ahead of these
        recorder.started(run_id, 2, at(3))
        recorder.finished(run_id, "ok", None, 20, at(4))
        os.rename(tmp_path / "away", folder)
        assert recorder.flush(60) is True
        r = rows(ledger)[run_id]
        assert (r.status, r.attempt, r.started_at, r.finished_at, r.error, r.duration_ms) == (
            "ok", 2, at(3), at(4), None, 20,
        )  # fmt: skip
    finally:
        forget_engine(url)


# ---- data the database refuses ------------------------------------------------------------------


@pytest.mark.postgres
def test_an_update_postgres_refuses_is_dropped_and_the_rest_of_its_batch_is_written(pg_schema_url: str) -> None:
    ledger = GatedLedger(pg_schema_url)
    ledger.ensure_schema()
    events = Events()
    writer = RunWriter(ledger, events, SYSTEM, "clock-a")
    first, poisoned, healthy = claimed(ledger, 3)
    hold_first_batch(ledger, writer, first)
    writer.started(poisoned, 2**40, at(2))  # attempt is a 32-bit column: Postgres refuses the whole batch
    writer.finished(healthy, "ok", None, 7, at(3))
    ledger.gate.set()
    assert writer.flush(30) is True
    got = rows(ledger)
    assert (got[healthy].status, got[healthy].duration_ms) == ("ok", 7)
    assert got[poisoned].status == "claimed"  # its one update was dropped ...
    rejected = events.wait_for("ledger.rejected")  # ... and said so
    assert rejected["run_id"] == poisoned
    writer.finished(first, "ok", None, 1, at(4))  # and the writer goes on
    assert writer.flush(30) is True
    assert rows(ledger)[first].status == "ok"


def test_nul_bytes_and_a_month_long_duration_are_recorded(store: Ledger) -> None:
    writer = RunWriter(store, Events(), SYSTEM, "clock-a")
    (run_id,) = claimed(store, 1)
    writer.finished(run_id, "failed", "exit=1: bin\x00ary", 40 * 24 * 3600 * 1000, at(1))
    assert writer.flush(30) is True
    r = rows(store)[run_id]
    assert (r.status, r.error, r.duration_ms) == ("failed", "exit=1: bin\\x00ary", 2**31 - 1)
