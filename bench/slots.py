"""Slots: one ``every: 1s`` job for a while, each slot's lateness from the ledger, and for each late slot what
the clock did around it: the diagnostic behind the precision figure.

The clock is started with ``bench/traced`` on PYTHONPATH, whose ``sitecustomize`` writes each call of the
methods on a run's path (the dispatcher's claim, the start write, ``WorkerPool.submit``, ``Runner.execute``, the
history writer, the leader's and the api-jobs thread's rounds) with its start and duration. For each slot later
than ``--late-ms``, the calls from 300 ms before it to 60 ms after are printed, in ms from the slot. Also printed:
the hand-over, from ``WorkerPool.submit`` to ``Runner.execute`` on a worker (median and worst; a run handed over
ahead of its start waits in ``execute``, so its hand-over is that wait).

    .venv/bin/python -m bench.slots [--duration 300] [--late-ms 1.5] [--stores sqlite postgres]

No target of its own: the tracing adds a few microseconds a call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common, gen, procs, stores

TRACED = Path(__file__).resolve().parent / "traced"
BEFORE, AFTER = 0.3, 0.06  # seconds of calls printed around a late slot


def read_trace(prefix: Path) -> list[tuple[float, float, str, str]]:
    """Every call traced, of every process of the clock: (start, ms, thread, method), by start."""
    calls = []
    for path in prefix.parent.glob(f"{prefix.name}-*.txt"):
        for line in path.read_text().splitlines():
            began, took, thread, name = line.split(" ", 3)
            calls.append((float(began), float(took), thread, name))
    return sorted(calls)


def hand_overs(calls: list[tuple[float, float, str, str]]) -> list[float]:
    """ms from each WorkerPool.submit to the next Runner.execute that starts after it."""
    out, submitted = [], None
    for began, _, _, name in calls:
        if name == "WorkerPool.submit":
            submitted = began
        elif name == "Runner.execute" and submitted is not None:
            out.append((began - submitted) * 1000)
            submitted = None
    return out


def run_clock(kind: str, duration: float, wd: Path, pg_url: str) -> dict[str, Any]:
    marker, _ = procs.ready_marker()
    path = os.pathsep.join(p for p in (str(TRACED), os.environ.get("PYTHONPATH", "")) if p)
    prefix = wd / f"trace-{kind}"
    with stores.fresh_store(kind, wd, pg_url) as store:
        proc = procs.spawn(
            procs.clock_argv(gen.precision(wd / f"slots-{kind}.yaml")),
            wd / f"slots-{kind}.log",
            env={"CLOCK_DATABASE_URL": store.url, "PYTHONPATH": path, "BENCH_TRACE": str(prefix)},
            markers=(marker,),
        )
        if proc.wait_for(marker, timeout=60) is None:
            proc.stop()
            return {"store": kind, "error": procs.stderr_tail(proc) or "never ready"}
        time.sleep(duration)
        proc.stop()
        rows = [r for r in stores.ledger_rows(store.url) if r["started_at"] and r["reason"] == "schedule"]
    calls = read_trace(prefix)
    slots = sorted((r["scheduled_for"], common.ms_between(r["started_at"], r["scheduled_for"])) for r in rows)
    return {"store": kind, "slots": slots, "calls": calls, "hand_overs": hand_overs(calls)}


def print_result(r: dict[str, Any], late_ms: float) -> None:
    print(f"\ndynoclock {r['store']}:")
    if "error" in r:
        print(f"  error: {r['error']}")
        return
    lateness = [ms for _, ms in r["slots"]]
    summary = common.summary(lateness)
    print(
        f"  {summary['n']} slots: median {summary['median']:.2f} ms, p99 {summary['p99']:.2f}, max {summary['max']:.2f}"
    )
    if r["hand_overs"]:
        worst = max(r["hand_overs"])
        print(f"  hand-over (submit -> execute): median {statistics.median(r['hand_overs']):.3f} ms, worst {worst:.3f}")
    for slot, ms in r["slots"]:
        if ms <= late_ms:
            continue
        at = (slot if slot.tzinfo else slot.replace(tzinfo=UTC)).timestamp()
        print(f"  slot {datetime.fromtimestamp(at, UTC):%H:%M:%S} started {ms:.2f} ms late; calls around it:")
        for began, took, thread, name in r["calls"]:
            if at - BEFORE <= began <= at + AFTER:
                print(f"    {(began - at) * 1000:+9.2f} ms  {took:8.3f} ms  {thread:12s} {name}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    results = []
    with common.workdir(args.keep) as wd:
        for kind in args.stores:
            print(f"  dynoclock {kind}: every 1s for {args.duration:g} s, traced ...", flush=True)
            results.append(run_clock(kind, args.duration, wd, args.pg_url))
    for r in results:
        print_result(r, args.late_ms)
    kept = [{"store": r["store"], "lateness_ms": [ms for _, ms in r.get("slots", [])]} for r in results]
    return common.publish("slots", info, args.json, duration_s=args.duration, results=kept)


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.slots", __doc__)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of running after ready (default 300)")
    p.add_argument("--late-ms", type=float, default=1.5, help="print the calls around slots later than this")
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
