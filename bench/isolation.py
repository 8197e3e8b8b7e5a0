"""Isolation: what ``isolate: process`` costs over ``isolate: thread`` for a no-op Python job.

- per run: ``Runner.execute`` of ``python: bench.jobs:noop`` (no state database: the claim and row writes are
  the same in both modes and left out), start to finish, in the calling thread as the clock's worker would;
  ``--runs`` runs per mode after 20 to warm up;
- RSS: of one idle worker process (``VmRSS``), and of this process (the clock's side) for scale;
- start-up: from spawning a worker process to its first answer (``ready``), ``--starts`` times.

    .venv/bin/python -m bench.isolation [--runs 500] [--starts 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from dynoclock.config.loader import load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.run.isolation import POOL
from dynoclock.run.runner import Runner

SCHEDULE = """jobs:
  noop-thread: {every: 1h, python: "bench.jobs:noop", isolate: thread}
  noop-process: {every: 1h, python: "bench.jobs:noop", isolate: process}
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def per_run(runner: Runner, job_id: str, runs: int) -> list[float]:
    job = runner.schedule.jobs[job_id]
    times = []
    for i in range(20 + runs):
        start = time.perf_counter()
        outcome = runner.execute(job, runner.clock.now(), retries=False)
        elapsed = (time.perf_counter() - start) * 1000
        assert outcome.status == "ok", outcome
        if i >= 20:
            times.append(elapsed)
    return times


def starts(count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        worker = POOL._start(("", 0), time.monotonic() + 60)
        times.append((time.perf_counter() - start) * 1000)
        worker.terminate()
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench.isolation", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    info = common.machine()
    common.print_machine(info)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "schedule.yaml"
        path.write_text(SCHEDULE)
        schedule = load_schedule(str(path))
    with open(os.devnull, "w") as sink:
        runner = Runner(schedule, EventLog(sink, fmt="logfmt"), clock_id="bench")
        thread = common.summary(per_run(runner, "noop-thread", args.runs))
        process = common.summary(per_run(runner, "noop-process", args.runs))
    worker_rss = [rss_mb(pid) for pid in POOL.pids()]
    own_rss = rss_mb(os.getpid())
    start = common.summary(starts(args.starts))
    POOL.shutdown()
    rows = [
        ["run, thread (ms)", common.fmt(thread["median"], 3), common.fmt(thread["p99"], 3), ""],
        ["run, process (ms)", common.fmt(process["median"], 3), common.fmt(process["p99"], 3),
         f"x{process['median'] / thread['median']:.1f} median, x{process['p99'] / thread['p99']:.1f} p99"],
        ["worker start-up (ms)", common.fmt(start["median"]), common.fmt(start["p99"]), ""],
        ["worker RSS (MB)", common.fmt(min(worker_rss, default=float("nan"))), "",
         f"clock side {own_rss:.1f} MB: x{min(worker_rss, default=float('nan')) / own_rss:.2f}"],
    ]  # fmt: skip
    common.print_table("isolate: thread vs process (no-op job)", ["figure", "median", "p99", "ratio"], rows)
    return common.publish(
        "isolation", info, args.json, thread_ms=thread, process_ms=process, start_ms=start,
        worker_rss_mb=worker_rss, clock_rss_mb=own_rss,
    )  # fmt: skip


if __name__ == "__main__":
    main()
