"""Rows of run history made the way the clock makes them: a claim, then the writer's updates (update_runs)."""

from __future__ import annotations

from dynoclock.state.ledger import Ledger


def start_run(store: Ledger, run_id: str, attempt: int, clock: str) -> None:
    store.update_runs({run_id: {"status": "running", "attempt": attempt, "clock": clock,
                                "started_at": store.clock.now(), "finished_at": None}})  # fmt: skip


def finish_run(store: Ledger, run_id: str, status: str, error: str | None, duration_ms: int | None) -> None:
    store.update_runs({run_id: {"status": status, "error": error or None, "duration_ms": duration_ms,
                                "finished_at": store.clock.now()}})  # fmt: skip
