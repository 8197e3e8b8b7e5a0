"""Run path: what one run costs in Python between the timer and the job, measured inside one process.

No clock process, no scheduler: a ``Runner`` on a generated schedule, its event log written to /dev/null by its
writer thread, as in the clock. Two figures:
- ``sequential``: CPU per run of ``Runner.execute`` with no ledger (one thread, ``bench.jobs:noop``);
- ``burst``: 1,000 claimed runs of ``bench.jobs:io_20ms`` submitted for the same instant, as the dispatcher
  does, on the default 300 workers, with the ledger on each store and the GC frozen as the clock's is at ready:
  the process's CPU per run until the last run ended, each kind of thread's CPU per run until the history is
  written, and lateness (``started_at`` - slot, from the ledger).
These are diagnostics, not targets (bench.burst judges the burst against plain APScheduler); ``--profile``
prints where the sequential path's time goes (cProfile: it slows calls down, so read the shares, not the times).

    .venv/bin/python -m bench.runpath [--runs 5000] [--jobs 1000] [--stores sqlite postgres] [--profile]
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import common, gen, stores
from dynoclock.config.loader import DEFAULT_WORKERS, load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.run.runner import Runner
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Claim


def quiet_log() -> EventLog:
    events = EventLog(open(os.devnull, "w"))  # noqa: SIM115 - open for the process's life, as stdout is
    events.write_behind()
    return events


def sequential(wd: Path, runs: int, profile: bool) -> float:
    """CPU microseconds per ``Runner.execute`` of a no-op Python job, no ledger."""
    at = datetime.now(UTC).replace(microsecond=0)
    schedule = load_schedule(str(gen.burst(wd / "seq.yaml", runs, at + timedelta(days=1), None, "bench.jobs:noop")))
    runner = Runner(schedule, quiet_log(), clock_id="bench")
    jobs = list(schedule.jobs.values())
    profiler = cProfile.Profile() if profile else None
    start = time.process_time()
    if profiler:
        profiler.enable()
    for job in jobs:
        runner.execute(job, at)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return (time.process_time() - start) / runs * 1e6


def burst(wd: Path, store: stores.Store, jobs: int) -> dict[str, Any]:
    """``jobs`` claimed runs due at one instant, through ``Runner.submit`` as the dispatcher hands them over."""
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    schedule = load_schedule(str(gen.burst(wd / f"burst-{store.kind}.yaml", jobs, at, None)))
    ledger = Ledger(store.url)
    ledger.ensure_schema()
    runner = Runner(schedule, quiet_log(), clock_id="bench", ledger=ledger)
    runner.pool.prestart(min(len(schedule.jobs), schedule.workers))
    claims = [Claim(f"run-{n:05d}", job, at, "bench") for n, job in enumerate(schedule.jobs)]
    assert len(ledger.claim_many(claims)) == jobs
    gc.freeze()  # as the clock does at ready: what start-up made is not walked again
    before = thread_cpu()
    start = time.process_time()
    for claim in claims:
        runner.submit(claim.job, claim.slot, claimed_as=claim.run_id)
    deadline = time.monotonic() + 60
    while runner.inflight.count() and time.monotonic() < deadline:  # polled: a waiter is woken as each run ends
        time.sleep(0.01)
    cpu = time.process_time() - start
    assert runner.writer is not None
    runner.writer.flush(30)
    after = thread_cpu()
    gc.unfreeze()
    threads = {name: round((ns - before.get(name, 0)) / 1e3 / jobs) for name, ns in after.items()}
    rows = stores.ledger_rows(store.url)
    late = [common.ms_between(row["started_at"], row["scheduled_for"]) for row in rows]
    lateness = [ms for ms in late if ms is not None]
    ok = sum(1 for row in rows if row["status"] == "ok")
    return {
        "store": store.kind,
        "cpu_us_per_run": cpu / jobs * 1e6,
        "ok": ok,
        "thread_us_per_run": {name: us for name, us in sorted(threads.items(), key=lambda kv: -kv[1]) if us},
        **common.summary(lateness),
    }


def thread_cpu() -> dict[str, int]:
    """Nanoseconds on a CPU so far, per kind of thread (``worker-17`` counts as ``worker``), from schedstat."""
    names = {t.native_id: re.sub(r"-\d+$", "", t.name) for t in threading.enumerate()}
    out: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                ns = int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0) + ns
    return out


def main() -> None:
    p = common.bench_parser("bench.runpath", __doc__)
    p.add_argument("--runs", type=int, default=5000, help="sequential runs")
    p.add_argument("--jobs", type=int, default=1000, help="runs in the burst")
    p.add_argument("--profile", action="store_true", help="cProfile the sequential runs")
    args = p.parse_args()
    info = common.machine()
    common.print_machine(info)
    with common.workdir(args.keep) as wd:
        seq = sequential(wd, args.runs, args.profile)
        results = []
        for kind in args.stores:
            with stores.fresh_store(kind, wd, args.pg_url) as store:
                results.append(burst(wd, store, args.jobs))
    print(f"\nsequential, no ledger: {seq:.1f} us of CPU per run ({args.runs} runs)")
    rows = [
        [r["store"], f"{r['cpu_us_per_run']:.0f}", str(r["ok"]), common.fmt(r.get("median")), common.fmt(r.get("p99"))]
        for r in results
    ]
    common.print_table(
        f"burst in process: {args.jobs} x 20 ms due at one instant, {DEFAULT_WORKERS} workers",
        ["store", "CPU us/run", "ok", "median ms", "p99 ms"],
        rows,
    )
    for r in results:  # the history and log writers' share is spent mostly after the last start (quiet.py)
        threads = ", ".join(f"{name} {us}" for name, us in r["thread_us_per_run"].items())
        print(f"  {r['store']}: CPU us per run by thread, until the history is written: {threads}")
    common.publish("runpath", info, args.json, sequential_us_per_run=seq, burst=results)


if __name__ == "__main__":
    main()
