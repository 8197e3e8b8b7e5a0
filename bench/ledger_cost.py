"""Ledger cost of one run, in-process, on SQLite and on Postgres: what the clock writes per run.

The claim is the only write a run waits for; its history (started, finished) goes through the
run writer (state/writer.py), which merges the two updates of a short run into one and commits batches. So a
run costs claim() + one record (Ledger.update_runs of the merged row). The started and finished updates
are timed apart too (each one update_runs call, as when they land in different batches).

``dynoclock.state.ledger.Ledger`` on a fresh store (SQLite temp file; Postgres schema of its own), N rounds
after a warm-up, each round a new run of one job: median / p99 / max per round and per call, in ms.
Beside it, what a plain APScheduler pays to persist one fire with ``SQLAlchemyJobStore`` on the same
database (``update_job``: one UPDATE and commit per fire, done in the scheduler's loop; the default
MemoryJobStore persists nothing), and floors: a ``SELECT 1`` through the ledger's engine (its transaction: on
Postgres BEGIN with the bounds, the SELECT, ROLLBACK; state/engines.py) and through a plain engine (the driver's
BEGIN, the SELECT, ROLLBACK).

    .venv/bin/python -m bench.ledger_cost [--rounds 500] [--stores sqlite postgres] [--json FILE]

Target (the first performance issue; the ratio targets leave it as it was): median <= 2 ms per run on Postgres
(absolute; ``SQLAlchemyJobStore.update_job`` on the same database is printed beside, with the ratio).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common, stores

TARGET = common.Target(2.0)
WARMUP = 20


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def ledger_rounds(url: str, rounds: int) -> dict[str, list[float]]:
    """Per round: claim, started, finished, and their sum (ms)."""
    from dynoclock.state.ledger import Ledger

    ledger = Ledger(url)
    ledger.ensure_schema()
    base = datetime(2030, 1, 1, tzinfo=UTC)
    bare = sa.create_engine(ledger.engine.url)  # the same database, without the ledger's transaction bounds
    out: dict[str, list[float]] = {
        "round": [],
        "claim": [],
        "record": [],
        "started": [],
        "finished": [],
        "select_1": [],
        "round_trip": [],
    }
    try:
        for i in range(WARMUP + rounds):
            run_id = uuid.uuid4().hex
            slot = base + timedelta(seconds=i)
            claim = timed(partial(ledger.claim, run_id, "bench-ledger", slot, "bench"))
            now = datetime.now(UTC)
            merged = {"status": "ok", "attempt": 1, "clock": "bench", "started_at": now, "finished_at": now,
                      "error": None, "duration_ms": 20}  # fmt: skip
            record = timed(partial(ledger.update_runs, {run_id: merged}))
            started_row = {"status": "running", "attempt": 1, "clock": "bench", "started_at": now, "finished_at": None}
            started = timed(partial(ledger.update_runs, {run_id: started_row}))
            finished_row = {"status": "ok", "error": None, "duration_ms": 20, "finished_at": now}
            finished = timed(partial(ledger.update_runs, {run_id: finished_row}))
            floor = timed(partial(_select_1, ledger.engine))
            round_trip = timed(partial(_select_1, bare))
            if i >= WARMUP:
                for key, value in (("claim", claim), ("record", record), ("started", started), ("finished", finished)):
                    out[key].append(value)
                out["round"].append(claim + record)
                out["select_1"].append(floor)
                out["round_trip"].append(round_trip)
    finally:
        ledger.engine.dispose()
        bare.dispose()
    return out


def _select_1(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1").scalar()


def jobstore_rounds(url: str, rounds: int) -> list[float]:
    """APScheduler's per-fire persistence: SQLAlchemyJobStore.update_job after moving next_run_time."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    store = SQLAlchemyJobStore(engine=engine)
    sched = BackgroundScheduler(jobstores={"default": store}, timezone=UTC)
    sched.start(paused=True)
    try:
        job = sched.add_job("bench.jobs:noop", "interval", hours=1, id="bench-jobstore")
        base = datetime(2030, 1, 1, tzinfo=UTC)
        times = []
        for i in range(WARMUP + rounds):
            job._modify(next_run_time=base + timedelta(seconds=i))
            elapsed = timed(partial(store.update_job, job))
            if i >= WARMUP:
                times.append(elapsed)
        return times
    finally:
        sched.shutdown(wait=False)
        engine.dispose()


def measure(kind: str, rounds: int, wd: Path, pg_url: str) -> list[dict[str, Any]]:
    with stores.fresh_store(kind, wd, pg_url) as store:
        print(f"  {kind}: ledger x{rounds} ...", flush=True)
        ledger = ledger_rounds(store.url, rounds)
    with stores.fresh_store(kind, wd, pg_url) as store:
        print(f"  {kind}: SQLAlchemyJobStore x{rounds} ...", flush=True)
        jobstore = jobstore_rounds(store.url, rounds)
    rows = [
        {
            "label": f"dynoclock {kind}: claim+record (per run)",
            "store": kind,
            "subject": "clock",
            "stats": common.summary(ledger["round"]),
        }
    ]
    for key in ("claim", "record", "started", "finished"):
        rows.append(
            {
                "label": f"  dynoclock {kind}: {key}()",
                "store": kind,
                "subject": "clock-part",
                "stats": common.summary(ledger[key]),
            }
        )
    rows.append(
        {
            "label": f"plain APScheduler {kind}: SQLAlchemyJobStore.update_job",
            "store": kind,
            "subject": "plain",
            "stats": common.summary(jobstore),
        }
    )
    rows.append(
        {
            "label": f"floor {kind}: SELECT 1 via the ledger's engine (bounded transaction)",
            "store": kind,
            "subject": "floor",
            "stats": common.summary(ledger["select_1"]),
        }
    )
    rows.append(
        {
            "label": f"floor {kind}: SELECT 1 via a plain engine",
            "store": kind,
            "subject": "floor",
            "stats": common.summary(ledger["round_trip"]),
        }
    )
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per store: the clock's median per run beside update_job's; the target is on Postgres only."""
    out = []
    for r in rows:
        if r["subject"] != "clock":
            continue
        base = next(b for b in rows if b["subject"] == "plain" and b["store"] == r["store"])
        target = TARGET if r["store"] == "postgres" else None
        label = f"{base['label']}, same run"
        median, base_median = r["stats"]["median"], base["stats"]["median"]
        out.append(
            common.verdict("ledger_cost", "median per run", r["label"], median, base_median, "ms", target, label)
        )
    return out


def print_results(rows: list[dict[str, Any]], checks: list[dict[str, Any]], rounds: int) -> None:
    headers = ["measure", "median ms", "p99 ms", "max ms"]
    table = [
        [
            r["label"],
            common.fmt(r["stats"]["median"], 3),
            common.fmt(r["stats"]["p99"], 3),
            common.fmt(r["stats"]["max"], 3),
        ]
        for r in rows
    ]
    common.print_table(f"Ledger cost per run, {rounds} rounds (after {WARMUP} warm-up), in-process", headers, table)
    common.print_verdicts("Ledger cost target", checks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    if "postgres" in args.stores:
        info["postgres"] = stores.postgres_version(args.pg_url)
    rows: list[dict[str, Any]] = []
    with common.workdir(args.keep) as wd:
        for kind in args.stores:
            rows += measure(kind, args.rounds, wd, args.pg_url)
    checks = verdicts(rows)
    print_results(rows, checks, args.rounds)
    return common.publish(
        "ledger_cost",
        info,
        args.json,
        rounds=args.rounds,
        targets={"postgres_median_ms": TARGET.limit},
        verdicts=checks,
        results=rows,
    )


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.ledger_cost", __doc__)
    p.add_argument("--rounds", type=int, default=500)
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
