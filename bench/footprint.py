"""Footprint: peak RSS with 10,000 jobs loaded, and CPU used over 60 s with nothing due.

The schedule has 10,000 jobs of mixed triggers none of which is due before 2035 (``start:`` on cron and
every jobs, ``at`` in 2035-2036). From the ready line, the clock is left alone for 60 s; then:
- peak RSS = VmHWM from /proc/PID/status (includes start-up);
- CPU seconds = utime + stime from /proc/PID/stat (all threads, resolution 1/CLK_TCK = 10 ms), over the 60 s;
- also the on-CPU time of the live threads (/proc/PID/task/*/schedstat, ns) and their context switches
  (wakeups), which show polling that the 10 ms ticks may hide.
The same for a plain APScheduler script holding the same 10,000 jobs (MemoryJobStore).

    .venv/bin/python -m bench.footprint [--jobs 10000] [--duration 60] [--stores sqlite postgres] [--json FILE]

Targets (issue), on SQLite and Postgres, with 10,000 jobs: peak RSS <= 1.0 x the plain script's in the same run;
CPU <= 0.02 s over the 60 s (absolute, a shorter --duration scaled to 60 s; the plain figure printed beside).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import common, gen, procs, stores

PLAIN_LABEL = "plain APScheduler (MemoryJobStore)"
RSS_TARGET = common.RatioTarget(1.0, f"{PLAIN_LABEL} holding the same jobs, same run")
CPU_TARGET = common.Target(0.02, "s")
ISSUE_JOBS = 10_000
ISSUE_DURATION = 60.0


def per_minute(cpu_s: float, duration: float) -> float:
    """The target is per 60 s: a shorter run (--duration) is scaled to it."""
    return cpu_s * 60.0 / duration


def sample(pid: int) -> dict[str, float]:
    return {
        "cpu_s": procs.cpu_seconds(pid),
        "thread_cpu_ns": procs.thread_cpu_ns(pid),
        "ctx_switches": procs.context_switches(pid),
    }


def idle(proc: procs.Proc, duration: float) -> dict[str, Any]:
    """CPU, wakeups and memory of ``proc`` over ``duration`` seconds from now."""
    before = sample(proc.pid)
    time.sleep(duration)
    after = sample(proc.pid)
    mem = procs.memory_mb(proc.pid)
    return {
        "cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
        "thread_cpu_s": round((after["thread_cpu_ns"] - before["thread_cpu_ns"]) / 1e9, 4),
        "wakeups": int(after["ctx_switches"] - before["ctx_switches"]),
        "peak_rss_mb": round(mem["VmHWM"], 1),
        "rss_mb": round(mem["VmRSS"], 1),
        "threads": procs.thread_count(proc.pid),
    }


def run_clock(schedule: Path, store_kind: str, duration: float, wd: Path, pg_url: str) -> dict[str, Any]:
    marker, note = procs.ready_marker()
    with stores.fresh_store(store_kind, wd, pg_url) as store:
        proc = procs.spawn(
            procs.clock_argv(schedule),
            wd / f"footprint-{store_kind}.log",
            env={"CLOCK_DATABASE_URL": store.url},
            markers=(marker,),
        )
        ready = proc.wait_for(marker, timeout=120)
        if ready is None:
            proc.stop()
            return {
                "label": f"dynoclock {store_kind}",
                "subject": "clock",
                "error": procs.stderr_tail(proc) or "never ready",
            }
        figures = idle(proc, duration)
        proc.stop()
        runs = len(stores.ledger_rows(store.url))
    return {
        "label": f"dynoclock {store_kind}",
        "subject": "clock",
        "store": store_kind,
        "ready_s": ready,
        "ledger_rows": runs,
        "note": note,
        **figures,
    }


def run_plain(schedule: Path, duration: float, wd: Path) -> dict[str, Any]:
    proc = procs.spawn(procs.plain_argv("ready", "-c", str(schedule)), wd / "footprint-plain.log", markers=("ready",))
    ready = proc.wait_for("ready", timeout=120)
    if ready is None:
        proc.stop()
        return {"label": PLAIN_LABEL, "subject": "plain", "error": procs.stderr_tail(proc) or "never ready"}
    figures = idle(proc, duration)
    proc.stop()
    return {"label": PLAIN_LABEL, "subject": "plain", "ready_s": ready, **figures}


def verdicts(results: list[dict[str, Any]], jobs: int, duration: float) -> list[dict[str, Any]]:
    """Per store: peak RSS against the plain script's (ratio); CPU per 60 s (absolute), the plain figure beside."""
    base = next((r for r in results if r.get("subject") == "plain" and "error" not in r), None)
    base_cpu = per_minute(base["cpu_s"], duration) if base else None
    out = []
    for r in results:
        if r.get("subject") != "clock":
            continue
        ok = "error" not in r
        size, invalid = common.Size(f"{jobs} jobs", jobs == ISSUE_JOBS), "" if ok else r["error"][:60]
        rss = r["peak_rss_mb"] if ok else None
        out.append(
            common.verdict(
                "footprint",
                "peak RSS",
                r["label"],
                rss,
                base["peak_rss_mb"] if base else None,
                "MB",
                RSS_TARGET,
                size=size,
                invalid=invalid,
            )
        )
        size = size.longer(f"{duration:g} s", duration >= ISSUE_DURATION)
        cpu = per_minute(r["cpu_s"], duration) if ok else None
        label = RSS_TARGET.baseline_label
        out.append(
            common.verdict(
                "footprint", "idle CPU per 60 s", r["label"], cpu, base_cpu, "s", CPU_TARGET, label, size, invalid
            )
        )
    return out


def print_results(results: list[dict[str, Any]], checks: list[dict[str, Any]], jobs: int, duration: float) -> None:
    headers = ["subject", "peak RSS MB", f"CPU s in {duration:g} s", "thread CPU s", "wakeups", "threads"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["label"], "ERROR", r["error"][:60], "", "", ""])
            continue
        rows.append(
            [
                r["label"],
                common.fmt(r["peak_rss_mb"]),
                common.fmt(r["cpu_s"], 2),
                common.fmt(r["thread_cpu_s"], 4),
                str(r["wakeups"]),
                str(r["threads"]),
            ]
        )
    common.print_table(f"Footprint: {jobs} jobs loaded, nothing due, {duration:g} s after ready", headers, rows)
    print("CPU s: utime+stime of all threads (10 ms ticks); thread CPU s: schedstat of live threads (ns);")
    print("wakeups: context switches of live threads over the interval.")
    for r in results:
        if r.get("ledger_rows"):
            print(f"warning: {r['label']}: {r['ledger_rows']} runs happened although nothing was due")
        if r.get("note"):
            print(f"note: {r['note']}")
    common.print_verdicts("Footprint targets (CPU scaled to 60 s)", checks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    results = []
    with common.workdir(args.keep) as wd:
        schedule = gen.mixed(wd / f"far-{args.jobs}.yaml", args.jobs, far_future=True)
        for store in args.stores:
            print(f"  dynoclock {store}: {args.jobs} jobs, {args.duration:g} s idle ...", flush=True)
            results.append(run_clock(schedule, store, args.duration, wd, args.pg_url))
        print(f"  plain APScheduler: {args.jobs} jobs, {args.duration:g} s idle ...", flush=True)
        results.append(run_plain(schedule, args.duration, wd))
    checks = verdicts(results, args.jobs, args.duration)
    print_results(results, checks, args.jobs, args.duration)
    return common.publish(
        "footprint",
        info,
        args.json,
        jobs=args.jobs,
        duration_s=args.duration,
        targets={"peak_rss_ratio": RSS_TARGET.limit, "idle_cpu_s_per_60s": CPU_TARGET.limit},
        verdicts=checks,
        results=results,
    )


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.footprint", __doc__)
    p.add_argument("--jobs", type=int, default=ISSUE_JOBS)
    p.add_argument(
        "--duration", type=float, default=ISSUE_DURATION, help="idle seconds measured after ready (default 60)"
    )
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
