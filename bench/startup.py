"""Start-up: ``clock.py check`` and time-to-ready with 1,000 and 10,000 jobs of mixed triggers.

- check: wall time of ``python clock.py check -c FILE`` (process spawn to exit).
- ready: from the spawn of ``python clock.py -c FILE`` (fresh state database) to its first stdout line
  with ``event=clock.ready`` (or ``event=clock.start`` on a clock that has no clock.ready; said in the output).
- plain APScheduler: ``bench.plain_apscheduler load`` (yaml.safe_load + build every trigger, exit) as the
  analog of check, and ``... ready`` (add every job, start, EVENT_SCHEDULER_STARTED) as time-to-ready.
- floor: ``python -c pass``, the interpreter's own start.

    .venv/bin/python -m bench.startup [--jobs 1000 10000] [--repeat 5] [--stores sqlite postgres] [--json FILE]

Targets (issue), on the medians with 10,000 jobs (the largest --jobs): spawn to ready on each store <= 0.5 x
plain APScheduler's spawn to EVENT_SCHEDULER_STARTED with the same jobs, in the same run; check <= 0.5 s
(absolute: plain APScheduler has no check; its load is printed beside, with the ratio). Smaller counts show
their ratios without a target.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import common, gen, procs, stores

PLAIN_READY = "plain: spawn -> EVENT_SCHEDULER_STARTED"
PLAIN_LOAD = "plain: yaml.safe_load + build triggers, exit"
READY_TARGET = common.RatioTarget(0.5, f"{PLAIN_READY} (same jobs, same run)")
CHECK_TARGET = common.Target(0.5, "s")
ISSUE_JOBS = 10_000


def wall(argv: list[str]) -> tuple[float, int, str]:
    """Seconds from spawn to exit, the exit code, and stderr's tail."""
    procs.compile_once()
    start = time.monotonic()
    done = subprocess.run(argv, cwd=common.REPO, capture_output=True, text=True, timeout=300, check=False)
    return time.monotonic() - start, done.returncode, done.stderr[-500:]


def time_command(argv: list[str], repeat: int) -> dict[str, Any]:
    times, codes, errors = [], [], []
    for _ in range(repeat):
        seconds, code, err = wall(argv)
        times.append(seconds)
        codes.append(code)
        if code:
            errors.append(err)
    return {"seconds": times, "exit_codes": codes, "errors": errors[:1]}


def clock_ready(schedule: Path, store_kind: str, wd: Path, pg_url: str, tag: str) -> dict[str, Any]:
    """One start of the clock on a fresh store: seconds to clock.start and to ready."""
    marker, note = procs.ready_marker()
    with stores.fresh_store(store_kind, wd, pg_url) as store:
        proc = procs.spawn(
            procs.clock_argv(schedule),
            wd / f"ready-{tag}.log",
            env={"CLOCK_DATABASE_URL": store.url},
            markers=(marker, procs.START),
        )
        ready = proc.wait_for(marker, timeout=120)
        start = proc.since_spawn(procs.START)
        code = proc.stop()
    return {
        "ready_s": ready,
        "start_event_s": start,
        "marker": marker,
        "note": note,
        "exit_code": code,
        "stderr": procs.stderr_tail(proc) if ready is None else "",
    }


def plain_ready(schedule: Path, wd: Path, tag: str) -> dict[str, Any]:
    proc = procs.spawn(
        procs.plain_argv("ready", "-c", str(schedule)), wd / f"plain-ready-{tag}.log", markers=("ready",)
    )
    ready = proc.wait_for("ready", timeout=120)
    proc.stop()
    return {"ready_s": ready, "stderr": procs.stderr_tail(proc) if ready is None else ""}


def measure(jobs: int, args: argparse.Namespace, wd: Path) -> list[dict[str, Any]]:
    schedule = gen.mixed(wd / f"mixed-{jobs}.yaml", jobs)
    out: list[dict[str, Any]] = []
    print(f"  {jobs} jobs: check x{args.repeat} ...", flush=True)
    out.append(
        {
            "what": "check",
            "subject": "clock",
            "jobs": jobs,
            "label": "dynoclock: clock.py check",
            **time_command(procs.clock_argv(schedule, "check"), args.repeat),
        }
    )
    out.append(
        {
            "what": "check",
            "subject": "plain",
            "jobs": jobs,
            "label": PLAIN_LOAD,
            **time_command(procs.plain_argv("load", "-c", str(schedule)), args.repeat),
        }
    )
    out.append(
        {
            "what": "check",
            "subject": "plain",
            "jobs": jobs,
            "label": "plain: same, with yaml.CSafeLoader (libyaml)",
            **time_command(procs.plain_argv("load", "--c-yaml", "-c", str(schedule)), args.repeat),
        }
    )
    for store in args.stores:
        print(f"  {jobs} jobs: ready on {store} x{args.repeat} ...", flush=True)
        runs = [clock_ready(schedule, store, wd, args.pg_url, f"{jobs}-{store}-{i}") for i in range(args.repeat)]
        out.append(
            {
                "what": "ready",
                "subject": "clock",
                "jobs": jobs,
                "store": store,
                "label": f"dynoclock {store}: spawn -> {runs[0]['marker'].split('=')[1]}",
                "seconds": [r["ready_s"] for r in runs if r["ready_s"] is not None],
                "start_event_s": common.summary([r["start_event_s"] for r in runs if r["start_event_s"]]),
                "note": runs[0]["note"],
                "failures": [r for r in runs if r["ready_s"] is None][:1],
            }
        )
    print(f"  {jobs} jobs: plain ready x{args.repeat} ...", flush=True)
    runs = [plain_ready(schedule, wd, f"{jobs}-{i}") for i in range(args.repeat)]
    out.append(
        {
            "what": "ready",
            "subject": "plain",
            "jobs": jobs,
            "label": PLAIN_READY,
            "seconds": [r["ready_s"] for r in runs if r["ready_s"] is not None],
            "failures": [r for r in runs if r["ready_s"] is None][:1],
        }
    )
    return out


def verdicts(rows: list[dict[str, Any]], target_jobs: int) -> list[dict[str, Any]]:
    """The clock's check and ready medians beside plain APScheduler's; targets at ``target_jobs`` only."""
    out = []
    for r in rows:
        if r["subject"] != "clock":
            continue
        jobs = r["jobs"]
        plain = PLAIN_LOAD if r["what"] == "check" else PLAIN_READY
        base = next(b for b in rows if b["jobs"] == jobs and b["label"] == plain)
        target = (CHECK_TARGET if r["what"] == "check" else READY_TARGET) if jobs == target_jobs else None
        measure = f"{'check' if r['what'] == 'check' else 'spawn to ready'}, {jobs} jobs"
        subject = "dynoclock: clock.py check" if r["what"] == "check" else f"dynoclock {r['store']}"
        out.append(
            common.verdict(
                "startup",
                measure,
                subject,
                r["stats"]["median"],
                base["stats"]["median"],
                "s",
                target,
                f"{plain} (same jobs, same run)",
                common.Size(f"{jobs} jobs", jobs == ISSUE_JOBS),
            )
        )
    return out


def print_results(rows: list[dict[str, Any]], checks: list[dict[str, Any]], repeat: int) -> None:
    headers = ["jobs", "measure", "median s", "p99 s", "max s"]
    table = [
        [
            str(r["jobs"]),
            r["label"],
            common.fmt(r["stats"]["median"], 3),
            common.fmt(r["stats"]["p99"], 3),
            common.fmt(r["stats"]["max"], 3),
        ]
        for r in rows
    ]
    common.print_table(f"Start-up, {repeat} repetitions each", headers, table)
    for r in rows:
        if r.get("note"):
            print(f"note: {r['note']}")
            break
    for r in rows:
        if r.get("errors") or r.get("failures"):
            print(f"problem in {r['label']} ({r['jobs']} jobs): {r.get('errors') or r.get('failures')}")
    common.print_verdicts("Start-up targets (on the medians)", checks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    rows: list[dict[str, Any]] = []
    with common.workdir(args.keep) as wd:
        rows.append(
            {
                "what": "floor",
                "subject": "python",
                "jobs": 0,
                "label": "floor: python -c pass",
                **time_command([procs.PYTHON, "-c", "pass"], args.repeat),
            }
        )
        for jobs in args.jobs:
            rows += measure(jobs, args, wd)
    for r in rows:
        r["stats"] = common.summary(r["seconds"])
    checks = verdicts(rows, max(args.jobs))
    print_results(rows, checks, args.repeat)
    return common.publish(
        "startup",
        info,
        args.json,
        repeat=args.repeat,
        targets={"ready_ratio": READY_TARGET.limit, "check_s": CHECK_TARGET.limit, "at_jobs": max(args.jobs)},
        verdicts=checks,
        results=rows,
    )


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.startup", __doc__)
    p.add_argument("--jobs", nargs="+", type=int, default=[1000, ISSUE_JOBS], help="the targets apply to the largest")
    p.add_argument("--repeat", type=int, default=5)
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
