"""A million pending one-offs: a real clock holding 1,000,000 runtime one-offs spread over 30 days, 10,000 of them
due in the same minute, beside plain APScheduler 3.11 (``BackgroundScheduler`` + ``SQLAlchemyJobStore``) holding
the same jobs on the same Postgres.

Each side, on a fresh Postgres schema of its own:
1. the scheduler with no runtime jobs: its RSS (VmRSS of the process tree) once settled, the baseline of the RSS
   ratio;
2. the jobs stored. Clock: through ``Scheduler.at_many`` in chunks of 5,000 (the rate is printed: it measures
   at_many at this size). Plain: the rows SQLAlchemyJobStore writes, by COPY (setup; ``add_job`` one by one stores
   a few hundred a second: bench/runtime.py). The far ones first (from 1 h after the due minute, over 30 days),
   then the due minute's, spread over it, once the minute's start is known;
3. the scheduler started again (one clock: ``python clock.py``, its state database the schema); from its ready
   line (the clock: its leader line) it is left alone: CPU of the process tree over ``--idle`` seconds (scaled to
   a minute), RSS at the end; the window ends 95 s before the due minute (the clock reads the one-offs due
   within 60 s every 30 s: the minute's 10,000 are read and parsed from 90 s before it, work that is not idling);
4. the due minute: each job (``python: bench.recorder:record``, args ``[n]``) appends ``n`` and the time its
   function started to a file; once every due one is recorded (or 120 s after the minute), SIGTERM. From the
   records: each due one ran exactly once, none early, no other ran; lateness = start - due (median, p99, max);
   peak RSS (VmHWM, tree).

    .venv/bin/python -m bench.million [--size 1000000] [--due 10000] [--days 30] [--idle 60]
    .venv/bin/python -m bench.million --smoke     # 20,000 jobs over 1 day, 500 due, 15-s idle

Targets (issue): every due one runs exactly once; p99 lateness <= 1 s; RSS <= 1.5 x its RSS with no runtime jobs;
idle CPU with them pending <= 0.1 s per minute (absolute; plain printed beside, with the ratio); at_many >= 5,000
jobs/s (here over the whole load; bench/runtime.py measures it on its own).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import common, plain_million, procs, recorder, stores
from dynoclock.daemon.apijobs import SLIDE, WINDOW

CHUNK = 5_000
SETTLE = 10.0  # seconds after ready before the RSS with no runtime jobs is read, and before the idle window
START = 30.0  # seconds allowed from the spawn to ready (the due minute starts after it, SETTLE and the idle window)
# The idle window ends this long before the due minute: the clock reads one-offs up to WINDOW ahead, every SLIDE
# seconds, so the minute's 10,000 are read (and parsed) from about 90 s before it: work, not idling.
AHEAD = WINDOW.total_seconds() + SLIDE + 5.0
DRAIN = 120.0  # seconds after the due minute's end a side has to record every due run
LATENESS = common.Target(1.0, "s")
CPU = common.Target(0.1, "s")
RSS = common.RatioTarget(1.5, "the same scheduler with no runtime jobs (peak RSS), same run")
MANY = 5_000.0


def far_items(size: int, due: int, days: float, start: datetime) -> Iterator[tuple[int, datetime]]:
    """The jobs not due in the minute: n in [0, size - due), from ``start`` over ``days``."""
    far = size - due
    step = timedelta(days=days) / max(far, 1)
    for n in range(far):
        yield n, start + step * n


def due_items(size: int, due: int, minute: datetime) -> list[tuple[int, datetime]]:
    """The due minute's: n in [size - due, size), evenly over the minute."""
    return [(size - due + i, minute + timedelta(seconds=60 * i / due)) for i in range(due)]


def clock_schedule(wd: Path) -> Path:
    """One job far away (a schedule needs one); the same for the run with no runtime jobs and the one with them."""
    path = wd / "million.yaml"
    path.write_text("timezone: UTC\njobs:\n  far:\n    at: 2099-01-01T00:00:00Z\n    command: 'true'\n")
    return path


def settled_rss(argv: list[str], log: Path, env: dict[str, str], marker: str) -> float | None:
    """Peak RSS (VmHWM, MB, tree) of a scheduler with nothing stored, SETTLE seconds after ``marker``."""
    proc = procs.spawn(argv, log, env=env, markers=(marker,))
    try:
        if proc.wait_for(marker, timeout=120) is None:
            return None
        time.sleep(SETTLE)
        return round(procs.memory_mb(proc.pid)["VmHWM"], 1)
    finally:
        proc.stop()


def store_clock(url: str, args: argparse.Namespace, minute_of: Callable[[], datetime]) -> dict[str, Any]:
    import dynoclock

    app = dynoclock.connect(url)
    start = time.perf_counter()
    stored = 0
    try:
        chunk: list[dict[str, Any]] = []
        first_far = minute_of() + timedelta(hours=1)
        for n, when in far_items(args.size, args.due, args.days, first_far):
            chunk.append({"when": when, "key": f"m-{n}", "python": "bench.recorder:record", "args": [n]})
            if len(chunk) == CHUNK:
                stored += len(app.at_many(chunk))
                chunk = []
        minute = minute_of()
        for n, when in due_items(args.size, args.due, minute):
            chunk.append({"when": when, "key": f"m-{n}", "python": "bench.recorder:record", "args": [n]})
            if len(chunk) == CHUNK:
                stored += len(app.at_many(chunk))
                chunk = []
        stored += len(app.at_many(chunk)) if chunk else 0
    finally:
        app.ledger.engine.dispose()
    elapsed = time.perf_counter() - start
    return {"stored": stored, "store_s": round(elapsed, 1), "at_many_per_s": round(stored / elapsed, 1),
            "minute": minute}  # fmt: skip


def store_plain(url: str, args: argparse.Namespace, minute_of: Callable[[], datetime]) -> dict[str, Any]:
    start = time.perf_counter()
    first_far = minute_of() + timedelta(hours=1)
    stored = plain_million.load(url, far_items(args.size, args.due, args.days, first_far))
    minute = minute_of()
    stored += plain_million.load(url, due_items(args.size, args.due, minute))
    return {"stored": stored, "store_s": round(time.perf_counter() - start, 1), "minute": minute}


def side(name: str, args: argparse.Namespace, wd: Path) -> dict[str, Any]:
    """One scheduler through steps 1-4 on a fresh schema."""
    record = wd / f"records-{name}.txt"
    with stores.fresh_store("postgres", wd, args.pg_url) as store:
        if name == "clock":
            argv, marker = procs.clock_argv(clock_schedule(wd)), "event=clock.leader"
            env = {"CLOCK_DATABASE_URL": store.url, "BENCH_RECORD": str(record)}
        else:
            argv, marker = [procs.PYTHON, "-m", "bench.plain_million", "serve", "--url", store.url], "ready"
            env = {"BENCH_RECORD": str(record)}
        print(f"  {name}: RSS with no runtime jobs ...", flush=True)
        empty_rss = settled_rss(argv, wd / f"{name}-empty.log", env, marker)
        # The minute (60 s from a whole second) starts once the scheduler has had time to start and idle: fixed
        # after the far jobs are in.
        lead = START + SETTLE + args.idle + AHEAD + 10.0

        def minute_of() -> datetime:
            return datetime.fromtimestamp(math.ceil(time.time() + lead), UTC)

        print(f"  {name}: storing {args.size:,} one-offs ...", flush=True)
        stored = (store_clock if name == "clock" else store_plain)(store.url, args, minute_of)
        minute: datetime = stored.pop("minute")
        print(f"  {name}: stored in {stored['store_s']} s; due minute {minute:%H:%M:%S}; starting ...", flush=True)
        proc = procs.spawn(argv, wd / f"{name}.log", env=env, markers=(marker,))
        try:
            ready = proc.wait_for(marker, timeout=120)
            if ready is None:
                return {"side": name, "error": procs.stderr_tail(proc) or "never ready", **stored}
            time.sleep(SETTLE)
            idle_s = min(args.idle, minute.timestamp() - AHEAD - time.time())
            before = procs.cpu_seconds(proc.pid)
            time.sleep(max(idle_s, 0))
            idle_cpu = procs.cpu_seconds(proc.pid) - before
            rss_idle = procs.memory_mb(proc.pid)["VmRSS"]
            print(f"  {name}: idle {idle_s:.0f} s, {idle_cpu:.2f} s CPU; waiting for the due minute ...", flush=True)
            due = {n for n, _ in due_items(args.size, args.due, minute)}
            deadline = minute.timestamp() + 60 + DRAIN
            while time.time() < deadline and len(due & {n for n, _ in recorder.read(record)}) < len(due):
                time.sleep(1.0)
            time.sleep(2.0)  # a run recorded twice shows up
            peak = procs.memory_mb(proc.pid)["VmHWM"]
        finally:
            proc.stop()
    whens = dict(due_items(args.size, args.due, minute))
    runs = recorder.read(record)
    counts = Counter(n for n, _ in runs)
    lateness = [at - whens[n].timestamp() for n, at in runs if n in whens]
    return {
        "side": name, **stored, "ready_s": round(ready, 2), "empty_rss_mb": empty_rss, "idle_s": round(idle_s, 1),
        "idle_cpu_s": round(idle_cpu, 3),
        "idle_cpu_per_min_s": round(idle_cpu * 60 / idle_s, 3) if idle_s > 0 else None,
        "rss_idle_mb": round(rss_idle, 1), "peak_rss_mb": round(peak, 1),
        "rss_ratio": round(peak / empty_rss, 2) if empty_rss else None,
        "due": len(whens), "ran_once": sum(1 for n in whens if counts[n] == 1),
        "ran_twice": sum(1 for n in whens if counts[n] > 1), "not_run": sum(1 for n in whens if counts[n] == 0),
        "others_run": sum(c for n, c in counts.items() if n not in whens),
        "early": sum(1 for value in lateness if value < 0), "lateness_s": common.summary(lateness),
    }  # fmt: skip


def verdicts(results: list[dict[str, Any]], size: common.Size) -> list[dict[str, Any]]:
    clock = next((r for r in results if r["side"] == "clock"), {})
    plain = next((r for r in results if r["side"] == "plain"), {})
    label = "plain APScheduler BackgroundScheduler + SQLAlchemyJobStore, same run"

    def one(
        measure: str, unit: str, target: common.Target | None, pick: Callable[[dict[str, Any]], Any]
    ) -> dict[str, Any]:
        figure = pick(clock) if clock and "error" not in clock else None
        base = pick(plain) if plain and "error" not in plain else None
        return common.verdict("million", measure, "dynoclock postgres", figure, base, unit, target, label, size)

    def own(r: dict[str, Any], subject: str) -> dict[str, Any]:
        """Peak RSS with the jobs against the same scheduler's with none (its own baseline, same run)."""
        ok = bool(r) and "error" not in r
        return common.verdict("million", "peak RSS with the jobs", subject, r.get("peak_rss_mb") if ok else None,
                              r.get("empty_rss_mb") if ok else None, "MB", RSS if subject.startswith("dyno") else None,
                              "the same scheduler with no runtime jobs (peak RSS), same run", size)  # fmt: skip

    out = [
        one("due runs not exactly once", "", common.Target(0, ""), lambda r: r["due"] - r["ran_once"]),
        one("runs of jobs not due", "", common.Target(0, ""), lambda r: r["others_run"]),
        one("runs started early", "", common.Target(0, ""), lambda r: r["early"]),
        one("p99 lateness", "s", LATENESS, lambda r: r["lateness_s"]["p99"]),
        one("median lateness", "s", None, lambda r: r["lateness_s"]["median"]),
        own(clock, "dynoclock postgres"),
        own(plain, "plain APScheduler (no target)"),
        one("idle CPU per minute", "s", CPU, lambda r: r["idle_cpu_per_min_s"]),
    ]
    rate = clock.get("at_many_per_s")
    out.append(common.verdict("million", "at_many jobs/s (whole load)", "dynoclock postgres", rate, None, "", None,
                              "plain: stored by COPY (setup), no rate", size))  # fmt: skip
    out[-1].update(target=f">= {MANY:g} jobs/s", limit=MANY, kind="absolute",
                   met="?" if rate is None else "yes" if rate >= MANY else "NO")  # fmt: skip
    return out


FIGURES = [
    ("stored", "jobs stored"), ("store_s", "store time s"), ("at_many_per_s", "at_many jobs/s"),
    ("ready_s", "spawn to ready/leader s"), ("empty_rss_mb", "peak RSS, no runtime jobs MB"),
    ("rss_idle_mb", "RSS idle with the jobs MB"), ("peak_rss_mb", "peak RSS with the jobs MB"),
    ("rss_ratio", "peak RSS ratio"), ("idle_s", "idle window s"), ("idle_cpu_s", "idle CPU s"),
    ("idle_cpu_per_min_s", "idle CPU per minute s"), ("due", "due in the minute"), ("ran_once", "ran exactly once"),
    ("ran_twice", "ran more than once"), ("not_run", "not run"), ("others_run", "runs of jobs not due"),
    ("early", "started early"),
]  # fmt: skip


def print_results(results: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    sides = [r["side"] for r in results]
    rows = [[label, *(common.fmt(r.get(key), 3) if isinstance(r.get(key), float) else str(r.get(key, "-"))
                      for r in results)] for key, label in FIGURES]  # fmt: skip
    for q in ("median", "p99", "max"):
        rows.append([f"lateness {q} s", *(common.fmt(r.get("lateness_s", {}).get(q), 3) for r in results)])
    common.print_table("Million pending one-offs", ["figure", *sides], rows)
    for r in results:
        if "error" in r:
            print(f"{r['side']}: ERROR {r['error']}")
    common.print_verdicts("Million targets", checks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    info["postgres"] = stores.postgres_version(args.pg_url)
    issue = args.size >= 1_000_000 and args.due >= 10_000 and args.days >= 30 and args.idle >= 60
    size = common.Size(f"{args.size:,} jobs over {args.days:g} days, {args.due:,} due, idle {args.idle:g} s", issue)
    began = time.monotonic()
    results = []
    with common.workdir(args.keep) as wd:
        for name in args.sides:
            results.append(side(name, args, wd))
    checks = verdicts(results, size)
    print_results(results, checks)
    print(f"took {time.monotonic() - began:.0f} s")
    return common.publish("million", info, args.json, size=size.text, verdicts=checks, results=results)


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.million", __doc__)
    p.add_argument("--size", type=int, default=1_000_000, help="pending one-offs in all")
    p.add_argument("--due", type=int, default=10_000, help="of which due in the same minute")
    p.add_argument("--days", type=float, default=30.0, help="the others spread over this many days")
    p.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measured before the minute")
    p.add_argument("--sides", nargs="+", default=["clock", "plain"], choices=["clock", "plain"])
    p.add_argument("--smoke", action="store_true", help="20,000 jobs over 1 day, 500 due, 15-s idle")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.smoke:
        args.size, args.due, args.days, args.idle = 20_000, 500, 1.0, 15.0
    run(args)


if __name__ == "__main__":
    main()
