"""The baseline: a plain APScheduler 3.11 ``BlockingScheduler`` script doing the benchmarks' work.

What a team writes without dynoclock: default executor (10 threads), default
``misfire_grace_time`` (1 s), MemoryJobStore, no ledger, no timeouts.

    python -m bench.plain_apscheduler burst --jobs 1000 --at EPOCH [--threads N] [--misfire-grace none] --out FILE
    python -m bench.plain_apscheduler precision --duration 60 --out FILE
    python -m bench.plain_apscheduler ready -c schedule.yaml    # prints "ready" at EVENT_SCHEDULER_STARTED
    python -m bench.plain_apscheduler load -c schedule.yaml     # builds every trigger and exits (check's analog)
    python -m bench.plain_apscheduler load --c-yaml -c ...      # the same with libyaml's CSafeLoader

``ready`` and ``load`` read the subset of schedule.yaml that bench/gen.py writes (cron, every, at, start;
command or python actions), with ``yaml.safe_load`` and ``CronTrigger.from_crontab``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bench import jobs

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def scheduler(threads: int | None, grace: str = "default") -> BlockingScheduler:
    """BlockingScheduler with its defaults, or with a bigger thread pool and/or another misfire_grace_time.

    ``grace`` is "default" (APScheduler's 1 s), "none" (no limit: a late run still runs) or seconds.
    """
    options: dict[str, Any] = {}
    if threads is not None:
        options["executors"] = {"default": ThreadPoolExecutor(threads)}
    if grace != "default":
        options["job_defaults"] = {"misfire_grace_time": None if grace == "none" else int(grace)}
    return BlockingScheduler(**options)


def say(text: str) -> None:
    print(text, flush=True)


class Tally:
    """Counts outcomes from the listener; lateness = the job's start (its return value) - scheduled time."""

    def __init__(self, expected: int, done: Callable[[], None]):
        self.expected = expected
        self.done = done
        self.lateness_ms: list[float] = []
        self.missed = 0
        self.errors = 0
        self._lock = threading.Lock()

    def __call__(self, event: JobExecutionEvent) -> None:
        with self._lock:
            if event.code == EVENT_JOB_MISSED:
                self.missed += 1
            elif event.code == EVENT_JOB_ERROR:
                self.errors += 1
            else:
                self.lateness_ms.append((event.retval - event.scheduled_run_time.timestamp()) * 1000)
            finished = self.missed + self.errors + len(self.lateness_ms) >= self.expected
        if finished:
            self.done()

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {"lateness_ms": list(self.lateness_ms), "missed": self.missed, "errors": self.errors}


def stop_soon(sched: BlockingScheduler) -> Callable[[], None]:
    """shutdown() from another thread: listeners run inside the scheduler's own threads."""
    fired = threading.Event()

    def stop() -> None:
        if not fired.is_set():
            fired.set()
            threading.Thread(target=sched.shutdown, kwargs={"wait": True}, daemon=True).start()

    return stop


def deadline(seconds: float, action: Callable[[], None]) -> None:
    """Call ``action`` after ``seconds``, from a daemon thread (a pending timer must not hold the exit)."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


def timed_io_20ms() -> float:
    started = time.time()
    jobs.io_20ms()
    return started


def timed_noop() -> float:
    started = time.time()
    jobs.noop()
    return started


def cmd_burst(args: argparse.Namespace) -> int:
    sched = scheduler(args.threads, args.misfire_grace)
    at = datetime.fromtimestamp(args.at, UTC)
    stop = stop_soon(sched)
    tally = Tally(args.jobs, stop)
    sched.add_listener(tally, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    sched.add_listener(lambda _: say("ready"), EVENT_SCHEDULER_STARTED)
    for i in range(args.jobs):
        sched.add_job(timed_io_20ms, DateTrigger(run_date=at), id=f"burst-{i:05d}")
    deadline(max(0.0, args.at - time.time()) + args.timeout, stop)
    sched.start()
    settings = {"expected": args.jobs, "threads": args.threads or 10, "misfire_grace_time": args.misfire_grace}
    write_out(args.out, tally.as_json() | settings)
    return 0


def cmd_precision(args: argparse.Namespace) -> int:
    sched = scheduler(None)
    stop = stop_soon(sched)
    tally = Tally(10**9, stop)
    sched.add_listener(tally, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    sched.add_listener(lambda _: say("ready"), EVENT_SCHEDULER_STARTED)
    sched.add_job(timed_noop, IntervalTrigger(seconds=1), id="tick")
    deadline(args.duration + 0.5, stop)
    sched.start()
    write_out(args.out, tally.as_json())
    return 0


def write_out(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh)


# ---- schedules from YAML (start-up and footprint) --------------------------------------------------------------


def seconds(text: str) -> float:
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(str(text)))


def instant(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def trigger(spec: dict[str, Any]) -> BaseTrigger:
    start = instant(spec["start"]) if "start" in spec else None
    if "cron" in spec:
        expr = MACROS.get(spec["cron"], spec["cron"])
        if start is None:
            return CronTrigger.from_crontab(expr, timezone=UTC)
        minute, hour, day, month, dow = expr.split()
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone=UTC, start_date=start
        )
    if "every" in spec:
        return IntervalTrigger(seconds=seconds(spec["every"]), start_date=start, timezone=UTC)
    return DateTrigger(run_date=instant(spec["at"]))


def run_command(argv: list[str]) -> None:
    subprocess.run(argv, check=True, timeout=30)


def action(spec: dict[str, Any]) -> tuple[Callable[..., Any], list[Any]]:
    if "command" in spec:
        return run_command, [spec["command"]]
    module, _, name = spec["python"].partition(":")
    return getattr(importlib.import_module(module), name), []


def load(file: str, sched: BlockingScheduler, c_yaml: bool = False) -> int:
    import yaml

    with open(file) as fh:
        doc = yaml.load(fh, Loader=yaml.CSafeLoader) if c_yaml else yaml.safe_load(fh)
    for job_id, spec in doc["jobs"].items():
        func, args = action(spec)
        sched.add_job(func, trigger(spec), args=args, id=job_id, name=job_id)
    return len(doc["jobs"])


def cmd_ready(args: argparse.Namespace) -> int:
    sched = scheduler(None)
    count = load(args.config, sched)
    sched.add_listener(lambda _: say(f"ready jobs={count}"), EVENT_SCHEDULER_STARTED)
    sched.start()  # until SIGTERM ends the process
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    count = load(args.config, scheduler(None), args.c_yaml)
    print(f"{args.config}: ok, {count} jobs")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.plain_apscheduler", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    burst = sub.add_parser("burst")
    burst.add_argument("--jobs", type=int, default=1000)
    burst.add_argument("--at", type=float, required=True, help="the instant, as a Unix time")
    burst.add_argument("--threads", type=int, default=None, help="thread pool size (default: APScheduler's 10)")
    burst.add_argument(
        "--misfire-grace", default="default", help="'default' (APScheduler's 1 s), 'none' (no limit) or seconds"
    )
    burst.add_argument("--timeout", type=float, default=120.0, help="give up this long after the instant")
    burst.add_argument("--out", required=True)
    precision = sub.add_parser("precision")
    precision.add_argument("--duration", type=float, default=60.0)
    precision.add_argument("--out", required=True)
    sub.add_parser("ready").add_argument("-c", "--config", required=True)
    load_cmd = sub.add_parser("load")
    load_cmd.add_argument("-c", "--config", required=True)
    load_cmd.add_argument("--c-yaml", action="store_true", help="parse with libyaml's CSafeLoader")
    args = parser.parse_args(argv)
    commands = {"burst": cmd_burst, "precision": cmd_precision, "ready": cmd_ready, "load": cmd_load}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
