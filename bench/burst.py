"""Burst: 1,000 jobs due in the same second, each sleeping 20 ms, ledger on, on SQLite and on Postgres.

The clock runs ``python clock.py -c FILE`` with a fresh state database, once with the default
``workers`` (300) and once with ``workers: 100``. Lateness = started_at - scheduled_for, read from
the ledger after the clock stopped; missed = jobs without an ``ok`` row. In the same run, a plain
APScheduler BlockingScheduler script runs the same 1,000 DateTrigger jobs (lateness = the job's start -
its scheduled time), once with its defaults (10 threads, misfire_grace_time 1 s) and once with 100 threads
and no misfire limit (misfire_grace_time None): the baseline.

    .venv/bin/python -m bench.burst [--repeat 3] [--jobs 1000] [--stores sqlite postgres] [--json FILE]

Targets (issue), on both stores, with default settings: 0 missed; median and p99 lateness each <= 0.5 x
those of plain APScheduler with 100 threads and no misfire limit, pooled over the same run's repetitions.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common, gen, procs, profile, stores
from dynoclock.config.loader import DEFAULT_WORKERS

BASELINE_THREADS = 100
BASELINE_LABEL = f"plain APScheduler, {BASELINE_THREADS} threads, no misfire limit"
TARGETS = {stat: common.RatioTarget(0.5, f"{BASELINE_LABEL}, same run") for stat in ("median", "p99")}
MISSED_TARGET = common.Target(0, "missed")
ISSUE_JOBS = 1000


@dataclass(frozen=True)
class Config:
    subject: str  # clock | plain
    store: str  # sqlite | postgres | memory (plain)
    workers: int | None  # clock: schedule's workers (None = the default); plain: threads (None = default 10)

    @property
    def label(self) -> str:
        if self.subject == "clock":
            return f"dynoclock {self.store}, workers={self.workers or f'default ({DEFAULT_WORKERS})'}"
        if self.workers:  # a bigger pool, and no misfire limit: every run runs however late
            return f"plain APScheduler, {self.workers} threads, no misfire limit"
        return "plain APScheduler, defaults (10 threads, grace 1 s)"


def instant(lead: float) -> datetime:
    """A whole second ``lead`` seconds or more ahead."""
    return datetime.fromtimestamp(math.ceil(time.time() + lead), UTC)


def monotonic_of(moment: datetime) -> float:
    return time.monotonic() + (moment.timestamp() - time.time())


def run_clock(
    cfg: Config,
    jobs: int,
    lead: float,
    timeout: float,
    wd: Path,
    pg_url: str,
    py_spy: str | None = None,
    gil: bool = False,
) -> dict[str, Any]:
    """One burst through the clock; returns lateness per run and what the ledger says."""
    marker, note = procs.ready_marker()
    with stores.fresh_store(cfg.store, wd, pg_url) as store:
        at = instant(lead)
        at_mono = monotonic_of(at)
        tag = f"{cfg.store}-{cfg.workers or 'default'}-{int(at.timestamp())}"
        schedule = gen.burst(wd / f"burst-{tag}.yaml", jobs, at, cfg.workers)
        finals = Counter[str]()

        def count(line: str, _: float) -> None:
            match = procs.FINAL_RUN.search(line)
            if match:
                finals[match[1]] += 1

        proc = procs.spawn(
            procs.clock_argv(schedule),
            wd / f"burst-{tag}.log",
            env={"CLOCK_DATABASE_URL": store.url},
            markers=(marker,),
            on_line=count,
        )
        ready = proc.wait_for(marker, timeout=lead + 60)
        spy = profile.start(py_spy, proc.pid, wd / f"burst-{tag}.pyspy", gil=gil) if py_spy and ready else None
        deadline = at.timestamp() + timeout
        while sum(finals.values()) < jobs and time.time() < deadline and proc.popen.poll() is None:
            time.sleep(0.05)
        done_wall = time.time()
        if spy is not None:
            profile.stop(spy)
        exit_code = proc.stop()
        rows = [r for r in stores.ledger_rows(store.url) if r["scheduled_for"] == at.replace(tzinfo=None)]
    result = _from_rows(rows, jobs, at)
    result |= {
        "ready_s": ready,
        "ready_marker": marker,
        "note": note,
        "exit_code": exit_code,
        "ready_before_instant": ready is not None and proc.spawned + ready < at_mono,
        "all_final_after_instant_s": round(done_wall - at.timestamp(), 3),
        "log_final_events": dict(finals),
        "clock_stderr": procs.stderr_tail(proc) if exit_code else "",
    }
    if spy is not None:
        result["profile"] = profile.top_frames(wd / f"burst-{tag}.pyspy")
    return result


def _from_rows(rows: list[dict[str, Any]], jobs: int, at: datetime) -> dict[str, Any]:
    slot = at.replace(tzinfo=None)
    lateness = [common.ms_between(r["started_at"], slot) for r in rows if r["started_at"] is not None]
    claim = [common.ms_between(r["claimed_at"], slot) for r in rows]
    finished = [r["finished_at"] for r in rows if r["finished_at"] is not None]
    ok = sum(r["status"] == "ok" for r in rows)
    return {
        "lateness_ms": [round(x, 3) for x in lateness if x is not None],
        "claim_lateness": common.summary([x for x in claim if x is not None]),
        "missed": jobs - ok,
        "statuses": dict(Counter(r["status"] for r in rows)),
        "rows": len(rows),
        "makespan_s": round((max(finished) - slot).total_seconds(), 3) if finished else None,
    }


def run_plain(cfg: Config, jobs: int, lead: float, timeout: float, wd: Path) -> dict[str, Any]:
    """One burst through the plain APScheduler script."""
    at = instant(lead)
    at_mono = monotonic_of(at)
    out = wd / f"plain-burst-{cfg.workers or 'default'}-{int(at.timestamp())}.json"
    argv = ["burst", "--jobs", str(jobs), "--at", str(at.timestamp()), "--timeout", str(timeout), "--out", str(out)]
    if cfg.workers:
        argv += ["--threads", str(cfg.workers), "--misfire-grace", "none"]
    proc = procs.spawn(procs.plain_argv(*argv), out.with_suffix(".log"), markers=("ready",))
    ready = proc.wait_for("ready", timeout=lead + 60)
    try:
        proc.popen.wait(lead + timeout + 30)
    except subprocess.TimeoutExpired:
        proc.stop()
    empty = {"lateness_ms": [], "missed": 0, "errors": 0}
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else empty
    return {
        "lateness_ms": [round(x, 3) for x in data["lateness_ms"]],
        "missed": jobs - len(data["lateness_ms"]),  # as for the clock: jobs without a successful run
        "missed_events": data["missed"],
        "errors": data["errors"],
        "misfire_grace_time": data.get("misfire_grace_time"),  # as the plain script was told: default, none, s
        "ready_s": ready,
        "ready_before_instant": ready is not None and proc.spawned + ready < at_mono,
        "exit_code": proc.popen.returncode,
    }


def configs(stores: list[str], workers: list[int | None], plain_threads: list[int | None]) -> list[Config]:
    """The clock's configurations, then the plain ones; the baseline (100 threads) is always among them."""
    out = [Config("clock", store, w) for store in stores for w in workers]
    threads = list(dict.fromkeys([*plain_threads, BASELINE_THREADS]))
    return out + [Config("plain", "memory", t) for t in threads]


def aggregate(cfg: Config, reps: list[dict[str, Any]]) -> dict[str, Any]:
    pooled = [x for rep in reps for x in rep["lateness_ms"]]
    stats = common.summary(pooled)
    missed = [rep["missed"] for rep in reps]
    return {
        "label": cfg.label,
        "subject": cfg.subject,
        "store": cfg.store,
        "workers": cfg.workers,
        "lateness_ms": stats,
        "missed_per_rep": missed,
        "makespan_s_per_rep": [rep.get("makespan_s") for rep in reps],
        "ready_before_instant": all(rep["ready_before_instant"] for rep in reps),
        "reps": [
            {k: v for k, v in rep.items() if k != "lateness_ms"} | {"lateness": common.summary(rep["lateness_ms"])}
            for rep in reps
        ],
    }


def verdicts(results: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    """Per clock configuration: median and p99 against the baseline's (ratio), and missed (absolute)."""
    base = next((r for r in results if r["label"] == BASELINE_LABEL), None)
    out = []
    for r in results:
        if r["subject"] != "clock":
            continue
        invalid = ""
        if not r["ready_before_instant"] or (base is not None and not base["ready_before_instant"]):
            invalid = "not ready before the instant"
        size = common.Size(f"{jobs} jobs", jobs == ISSUE_JOBS)
        for stat, target in TARGETS.items():
            figure, baseline = r["lateness_ms"][stat], base["lateness_ms"][stat] if base else None
            out.append(
                common.verdict(
                    "burst", f"{stat} lateness", r["label"], figure, baseline, "ms", target, size=size, invalid=invalid
                )
            )
        missed, base_missed = sum(r["missed_per_rep"]), sum(base["missed_per_rep"]) if base else None
        out.append(
            common.verdict(
                "burst",
                "missed",
                r["label"],
                missed,
                base_missed,
                "",
                MISSED_TARGET,
                f"{BASELINE_LABEL}, same run",
                size,
                invalid,
            )
        )
    return out


def print_results(results: list[dict[str, Any]], checks: list[dict[str, Any]], jobs: int, repeat: int) -> None:
    headers = ["subject", "missed/rep", "median ms", "p99 ms", "max ms", "makespan s", "ready in time"]
    rows = []
    for r in results:
        s = r["lateness_ms"]
        spans = [x for x in r["makespan_s_per_rep"] if x is not None]
        rows.append(
            [
                r["label"],
                ",".join(map(str, r["missed_per_rep"])),
                common.fmt(s["median"]),
                common.fmt(s["p99"]),
                common.fmt(s["max"]),
                common.fmt(max(spans), 2) if spans else "-",
                "yes" if r["ready_before_instant"] else "NO (INVALID: not ready before the instant)",
            ]
        )
    title = f"Burst: {jobs} jobs x 20 ms due in the same second, {repeat} repetition(s), lateness pooled"
    common.print_table(title, headers, rows)
    print("makespan: last finished_at - the instant (clock, from the ledger); plain APScheduler keeps no ledger.")
    note = next((rep["note"] for r in results for rep in r["reps"] if rep.get("note")), "")
    if note:
        print(f"note: {note}")
    common.print_verdicts("Burst targets (the clock's default settings are the issue's)", checks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    if "postgres" in args.stores:
        info["postgres"] = stores.postgres_version(args.pg_url)
    workers: list[int | None] = [None if w == 0 else w for w in args.workers]
    threads: list[int | None] = [None if t == 0 else t for t in args.plain_threads]
    cfgs = configs(args.stores, workers, threads)
    reps: dict[Config, list[dict[str, Any]]] = {cfg: [] for cfg in cfgs}
    with common.workdir(args.keep) as wd:
        for rep in range(args.repeat):
            for cfg in cfgs:  # interleaved, so that a noisy minute spreads over all configurations
                print(f"  rep {rep + 1}/{args.repeat}: {cfg.label} ...", flush=True)
                if cfg.subject == "clock":
                    result = run_clock(cfg, args.jobs, args.lead, args.timeout, wd, args.pg_url)
                else:
                    result = run_plain(cfg, args.jobs, args.lead, args.timeout, wd)
                reps[cfg].append(result)
        profiles = []
        if args.py_spy:
            for store in args.stores:
                cfg = Config("clock", store, None)
                print(f"  profiling (not counted): {cfg.label} ...", flush=True)
                result = run_clock(
                    cfg, args.jobs, args.lead, args.timeout, wd, args.pg_url, py_spy=args.py_spy, gil=args.py_spy_gil
                )
                if "profile" in result:
                    mode = "GIL holder only" if args.py_spy_gil else "all active threads"
                    profiles.append({"label": f"{cfg.label}; {mode}", **result["profile"]})
    results = [aggregate(cfg, reps[cfg]) for cfg in cfgs]
    checks = verdicts(results, args.jobs)
    print_results(results, checks, args.jobs, args.repeat)
    for prof in profiles:
        profile.print_top(f"py-spy, {prof['label']} (a separate run, from ready to the last run)", prof)
    return common.publish(
        "burst",
        info,
        args.json,
        jobs=args.jobs,
        repeat=args.repeat,
        targets={"missed": 0, "median_ratio": TARGETS["median"].limit, "p99_ratio": TARGETS["p99"].limit},
        baseline=BASELINE_LABEL,
        verdicts=checks,
        results=results,
        profiles=profiles,
    )


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.burst", __doc__)
    p.add_argument("--jobs", type=int, default=ISSUE_JOBS)
    p.add_argument("--repeat", type=int, default=3, help="repetitions of every configuration (default 3)")
    p.add_argument(
        "--workers", nargs="+", type=int, default=[0, 100], help="clock workers; 0 = the schedule's default (300)"
    )
    p.add_argument(
        "--plain-threads",
        nargs="*",
        type=int,
        default=[0, BASELINE_THREADS],
        help="0 = APScheduler's defaults (10 threads, grace 1 s); others run with no misfire limit; "
        f"the baseline ({BASELINE_THREADS}) always runs",
    )
    p.add_argument(
        "--lead", type=float, default=6.0, help="seconds from start to the instant (the clock must be ready)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="give up this long after the instant")
    p.add_argument("--py-spy", default=None, metavar="BIN", help="also profile one extra clock run per store")
    p.add_argument("--py-spy-gil", action="store_true", help="profile only the GIL holder (CPU), not wall time")
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
