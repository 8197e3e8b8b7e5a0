"""Idle CPU per thread: a clock with 10,000 jobs, nothing due, and each of its threads' on-CPU time and context
switches over the interval (the breakdown of ``bench.footprint``'s idle CPU figure).

The clock's process tree is started with ``bench/named`` on PYTHONPATH, whose ``sitecustomize`` names each OS
thread after its Python thread; the figures come from ``/proc/PID/task/*/schedstat`` and ``status``, summed per
name (the supervisor's main thread is the one named ``python``), scaled to 60 s.

    .venv/bin/python -m bench.threads [--duration 60] [--jobs 10000] [--stores sqlite postgres]

No target of its own: it says where the footprint's idle CPU goes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import common, gen, procs, stores

NAMED = Path(__file__).resolve().parent / "named"


def per_thread(before: dict[str, tuple[str, int, int]], after: dict[str, tuple[str, int, int]]) -> dict[str, list[int]]:
    """Name -> [ns, switches] used between the two snapshots (a thread started meanwhile counts from zero)."""
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, (name, ns, switches) in after.items():
        _, ns0, switches0 = before.get(key, (name, 0, 0))
        used[name][0] += ns - ns0
        used[name][1] += switches - switches0
    return dict(used)


def run_clock(schedule: Path, kind: str, duration: float, wd: Path, pg_url: str) -> dict[str, Any]:
    marker, _ = procs.ready_marker()
    path = os.pathsep.join(p for p in (str(NAMED), os.environ.get("PYTHONPATH", "")) if p)
    with stores.fresh_store(kind, wd, pg_url) as store:
        proc = procs.spawn(
            procs.clock_argv(schedule),
            wd / f"threads-{kind}.log",
            env={"CLOCK_DATABASE_URL": store.url, "PYTHONPATH": path},
            markers=(marker,),
        )
        if proc.wait_for(marker, timeout=120) is None:
            proc.stop()
            return {"store": kind, "error": procs.stderr_tail(proc) or "never ready"}
        time.sleep(2.0)  # the start's last writes settle
        before, cpu0 = procs.threads(proc.pid), procs.cpu_seconds(proc.pid)
        time.sleep(duration)
        after, cpu1 = procs.threads(proc.pid), procs.cpu_seconds(proc.pid)
        proc.stop()
    scale = 60.0 / duration
    threads = {
        name: {"cpu_ms": round(ns / 1e6 * scale, 2), "switches": round(sw * scale, 1)}
        for name, (ns, sw) in sorted(per_thread(before, after).items(), key=lambda item: -item[1][0])
        if ns or sw
    }
    return {
        "store": kind,
        "threads": threads,
        "total_ms": round(sum(t["cpu_ms"] for t in threads.values()), 2),
        "ticks_s": round((cpu1 - cpu0) * scale, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    results = []
    with common.workdir(args.keep) as wd:
        schedule = gen.mixed(wd / f"far-{args.jobs}.yaml", args.jobs, far_future=True)
        for kind in args.stores:
            print(f"  dynoclock {kind}: {args.jobs} jobs, {args.duration:g} s idle ...", flush=True)
            results.append(run_clock(schedule, kind, args.duration, wd, args.pg_url))
    for r in results:
        print(f"\ndynoclock {r['store']}: per 60 s")
        if "error" in r:
            print(f"  error: {r['error']}")
            continue
        print(f"  {'thread':16s} {'CPU ms':>8s} {'switches':>9s}")
        for name, t in r["threads"].items():
            print(f"  {name:16s} {t['cpu_ms']:8.2f} {t['switches']:9.1f}")
        print(f"  {'total':16s} {r['total_ms']:8.2f}   (utime+stime, 10 ms ticks: {r['ticks_s']:.3f} s)")
    return common.publish("threads", info, args.json, jobs=args.jobs, duration_s=args.duration, results=results)


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.threads", __doc__)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=60.0, help="idle seconds measured (default 60)")
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
