"""Runtime one-offs from the app: how fast ``Scheduler.at`` (one call, one transaction each) and ``at_many`` (chunks
of 1,000 per call) store them, in-process, on a fresh state database.

Each call is the app's: ``dynoclock.connect(url).at(when, python="bench.recorder:record", args=[n])`` with a generated
id, whens spread over 30 days; ``at_many`` takes 1,000 such items per call. Beside it, what plain APScheduler 3.11
pays to store the same one-off with ``SQLAlchemyJobStore`` on the same database (``add_job(..., "date",
run_date=...)`` on a started, paused scheduler: one INSERT and commit each; it has no batch insert).

    .venv/bin/python -m bench.runtime [--at 2000] [--many 50000] [--chunk 1000] [--stores sqlite postgres]
    .venv/bin/python -m bench.runtime --smoke

Targets (issue), on Postgres (absolute: the plain figure is printed beside, with the ratio): ``at`` one by one
>= 500 jobs/s, ``at_many`` >= 5,000 jobs/s. The figures are rates (higher is better): ``met`` is figure >= target.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench import common, stores

AT_TARGET = 500.0
MANY_TARGET = 5_000.0
SPREAD = timedelta(days=30)
WARMUP = 20


def whens(count: int, start: datetime) -> list[datetime]:
    step = SPREAD / max(count, 1)
    return [start + step * n for n in range(count)]


def clock_rates(url: str, at_calls: int, many: int, chunk: int) -> dict[str, float]:
    """Jobs per second through ``at`` (one call each) and ``at_many`` (``chunk`` per call)."""
    import dynoclock

    app = dynoclock.connect(url)
    start = datetime.now(UTC) + timedelta(days=1)
    try:
        for n, when in enumerate(whens(WARMUP, start)):
            app.at(when, python="bench.recorder:record", args=[n])
        began = time.perf_counter()
        for n, when in enumerate(whens(at_calls, start)):
            app.at(when, python="bench.recorder:record", args=[n])
        at_rate = at_calls / (time.perf_counter() - began)
        items = [
            {"when": when, "python": "bench.recorder:record", "args": [n]} for n, when in enumerate(whens(many, start))
        ]
        began = time.perf_counter()
        for first in range(0, many, chunk):
            app.at_many(items[first : first + chunk])
        many_rate = many / (time.perf_counter() - began)
    finally:
        app.ledger.engine.dispose()
    return {"at": at_rate, "at_many": many_rate}


def plain_rate(url: str, calls: int) -> float:
    """Plain APScheduler: ``add_job`` of a date-triggered job into SQLAlchemyJobStore, one by one."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    engine = sa.create_engine(stores._psycopg(url))
    sched = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine)}, timezone=UTC)
    sched.start(paused=True)
    start = datetime.now(UTC) + timedelta(days=1)
    try:
        for n, when in enumerate(whens(WARMUP, start)):
            sched.add_job("bench.recorder:record", "date", run_date=when, args=[n], id=uuid.uuid4().hex)
        began = time.perf_counter()
        for n, when in enumerate(whens(calls, start)):
            sched.add_job("bench.recorder:record", "date", run_date=when, args=[n], id=uuid.uuid4().hex)
        return calls / (time.perf_counter() - began)
    finally:
        sched.shutdown(wait=False)
        engine.dispose()


def verdicts(rows: list[dict[str, Any]], size: common.Size) -> list[dict[str, Any]]:
    """Rates are better higher: met is figure >= target (common.Target is for figures better lower)."""
    out = []
    for r in rows:
        target = AT_TARGET if r["measure"] == "at" else MANY_TARGET
        v = common.verdict("runtime", f"{r['measure']} jobs/s", f"dynoclock {r['store']}", r["rate"],
                           r["plain"], "", None, "plain APScheduler SQLAlchemyJobStore.add_job, one by one, same run",
                           size)  # fmt: skip
        if r["store"] == "postgres":
            v.update(target=f">= {target:g} jobs/s", limit=target, kind="absolute",
                     met="yes" if r["rate"] >= target else "NO")  # fmt: skip
        out.append(v)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    if "postgres" in args.stores:
        info["postgres"] = stores.postgres_version(args.pg_url)
    issue = not args.smoke and args.at >= 2000 and args.many >= 50_000 and args.chunk == 1000
    size = common.Size(f"at x{args.at}, at_many {args.many} in chunks of {args.chunk}", issue)
    rows: list[dict[str, Any]] = []
    with common.workdir(args.keep) as wd:
        for kind in args.stores:
            with stores.fresh_store(kind, wd, args.pg_url) as store:
                print(f"  {kind}: at x{args.at}, at_many x{args.many} ...", flush=True)
                rates = clock_rates(store.url, args.at, args.many, args.chunk)
            with stores.fresh_store(kind, wd, args.pg_url) as store:
                print(f"  {kind}: SQLAlchemyJobStore.add_job x{args.at} ...", flush=True)
                plain = plain_rate(store.url, args.at)
            for measure in ("at", "at_many"):
                rows.append(
                    {"store": kind, "measure": measure, "rate": round(rates[measure], 1), "plain": round(plain, 1)}
                )
    checks = verdicts(rows, size)
    table = [[r["store"], r["measure"], common.fmt(r["rate"]), common.fmt(r["plain"])] for r in rows]
    common.print_table("Runtime one-offs stored per second, in-process", ["store", "call", "jobs/s", "plain/s"], table)
    common.print_verdicts("Runtime job targets (rates: met is figure >= target)", checks)
    return common.publish("runtime", info, args.json, size=size.text, verdicts=checks, results=rows)


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.runtime", __doc__)
    p.add_argument("--at", type=int, default=2000, help="one-offs added one call each")
    p.add_argument("--many", type=int, default=50_000, help="one-offs added through at_many")
    p.add_argument("--chunk", type=int, default=1000, help="items per at_many call")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (at x100, at_many x2000): the script runs")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.smoke:
        args.at, args.many = 100, 2000
    run(args)


if __name__ == "__main__":
    main()
