"""The command line: ``python clock.py [run|check|next|history|status|crontab|ui]``.

Exit codes: 0 ok, 1 a run or a state read failed (or ``crontab`` left jobs out), 2 the schedule or the command
line is invalid. Problems go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, NotRequired, TypedDict

from dynoclock import signals
from dynoclock.cli.args import build_parser, parse_args
from dynoclock.cli.crontab import render
from dynoclock.config.loader import Job, Schedule, default_path, load_schedule
from dynoclock.config.preflight import check_environment
from dynoclock.config.problems import ConfigError
from dynoclock.daemon import supervisor
from dynoclock.observe.redact import redact, redact_url
from dynoclock.observe.status import StateMisconfigured, StateUnavailable
from dynoclock.schedule.triggers import jitter_offset, upcoming
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from dynoclock.state.ledger import Ledger

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class NextRow(TypedDict):
    """One job in ``next`` (and ``next --json``)."""

    id: str
    enabled: bool
    trigger: str
    spec: str
    schedule: str
    timezone: str
    next: list[str]  # the upcoming slots, ISO 8601 in the job's zone
    starts: NotRequired[list[str]]  # with jitter: when each slot's run starts
    origin: NotRequired[str]  # api: added from the app
    paused: NotRequired[bool]  # when the state can be read


def main(argv: Sequence[str] | None = None, clock: Clock = SYSTEM) -> int:
    """Run one command; ``clock`` is what every command asks for the time."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[[argparse.Namespace, Clock], int]] = {
        "run": cmd_run, "check": cmd_check, "next": cmd_next, "history": cmd_history,
        "status": cmd_status, "crontab": cmd_crontab, "ui": cmd_ui,
    }  # fmt: skip
    args = parse_args(argv)
    if not (args.command == "run" and args.job is None):
        signals.release()  # only the daemon stops on signals of its own; the other commands keep Python's default
    try:
        command = commands.get(args.command)
        if command is None:
            build_parser().print_help()
            return EXIT_INVALID
        return command(args, clock)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except StateUnavailable as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID if isinstance(exc, StateMisconfigured) else EXIT_FAILED


def _ledger() -> Ledger:
    """The state database, schema ensured (imported here: check and next need no database driver)."""
    from dynoclock.observe.logs import short_error  # here: logging is not imported for check and next
    from dynoclock.state import engines as db
    from dynoclock.state.ledger import Ledger
    from dynoclock.state.location import state_url
    from dynoclock.state.schema import SchemaDenied, SchemaNameError

    url = state_url()
    try:
        ledger = Ledger(url)
        migrated = ledger.ensure_schema()
    except SchemaNameError as exc:
        raise StateMisconfigured(str(exc)) from None
    except db.DatabaseUrlError as exc:
        raise StateUnavailable(str(exc)) from None
    except SchemaDenied as exc:
        raise StateMisconfigured(f"state: {exc}") from None
    except Exception as exc:
        raise StateUnavailable(f"cannot reach the state database {redact_url(url)}: {short_error(exc)}") from None
    if migrated is not None:  # on stderr: stdout may be --json
        print(f"state.migrated from={migrated.source} to={migrated.target} tables={migrated.tables}", file=sys.stderr)
    return ledger


def _load(args: argparse.Namespace, now: datetime | None = None, view: bool = False) -> Schedule:
    """The schedule; ``view`` (status, next, crontab) reads when jobs run, not what they do (see load_schedule)."""
    file = args.config or default_path()
    # python: jobs import from the schedule's folder (jobs/ beside schedule.yaml) and from the current one.
    for folder in (os.getcwd(), os.path.dirname(os.path.abspath(file))):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    schedule = load_schedule(file, now=now, view=view)
    for warning in schedule.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return schedule


def cmd_run(args: argparse.Namespace, clock: Clock) -> int:
    if args.job is None and supervisor.wanted():  # the scheduler runs in a child it restarts (daemon/supervisor.py)
        return supervisor.Supervisor(clock=clock).run()
    if args.job is None:
        # Start-up builds objects that live as long as the process (the schedule, 10,000 jobs in the scheduler):
        # the cyclic GC walked them again and again (0.2 s of a 10,000-job start). run_clock collects once, freezes
        # them and turns the GC back on.
        collecting = gc.isenabled()
        gc.disable()
        from dynoclock.daemon.memory import fix_mmap_threshold

        fix_mmap_threshold()  # before the schedule's large blocks come and go (daemon/memory.py)
        try:
            schedule = _load(args)
            if supervisor.supervised():
                supervisor.start_heartbeat(schedule.shutdown_grace.total_seconds(), clock)
            check_environment(schedule)
            # The key paths' lines are for the problems of this file, all found by now (a reload reads the file
            # anew): with 10,000 jobs, 40,000 paths that a running clock would keep for nothing (7 MB of RSS).
            schedule = dataclasses.replace(schedule, lines={})
            from dynoclock.daemon.process import run_clock

            return run_clock(schedule, clock=clock)
        finally:
            if collecting:
                gc.enable()
    schedule = _load(args)
    check_environment(schedule)
    return run_once(schedule, args.job, clock)


def _some(names: list[str], limit: int = 10) -> str:
    """The first ``limit`` names: a schedule of 10,000 jobs is not printed whole."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, and {len(names) - limit:,} more"


def run_once(schedule: Schedule, job_id: str, clock: Clock = SYSTEM) -> int:
    """``run JOB``: one attempt now, in the foreground; Ctrl-C or SIGTERM stops it."""
    from dynoclock.run.runner import Runner

    job = schedule.jobs.get(job_id)
    if job is None:
        known = _some(list(schedule.jobs)) or "none"
        print(f"run: no job {job_id!r} in {schedule.file} (jobs: {known})", file=sys.stderr)
        return EXIT_INVALID
    if job.action is None:
        print(f"run: job {job_id!r} is disabled and its action names unset variables", file=sys.stderr)
        return EXIT_INVALID
    from dynoclock.state.location import clock_id

    redact.add_from_env()
    try:
        ledger: Ledger | None = _ledger()
    except StateUnavailable as exc:
        print(f"warning: {exc}; running without recording the run", file=sys.stderr)
        ledger = None
    runner = Runner(schedule, clock_id=f"{clock_id()}:manual", ledger=ledger, clock=clock)

    def stop(signum: int, frame: FrameType | None) -> None:  # Ctrl-C / SIGTERM: stop the run, record it
        threading.Thread(target=runner.drain, args=(clock.monotonic(),), daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    outcome = runner.run_foreground(job)  # returns even if the job will not stop: the watchdog reports it
    from dynoclock.run.isolation import POOL

    POOL.shutdown()  # an `isolate: process` job's worker
    if runner.writer is not None:
        runner.writer.flush(timeout=10.0)
    runner.notifier.flush(timeout=10.0)
    print(  # the run's text may quote a secret (an error page echoing a header): mask it as the log does
        redact(
            f"{job_id}: {outcome.status}"
            + (f" ({outcome.error or outcome.detail})" if outcome.error or outcome.detail else "")
        )
    )
    return EXIT_OK if outcome.status == "ok" else EXIT_FAILED


def cmd_history(args: argparse.Namespace, clock: Clock) -> int:
    if args.limit < 1:
        print("history: --limit must be at least 1", file=sys.stderr)
        return EXIT_INVALID
    from dynoclock.cli.tables import format_history

    runs = _ledger().history(args.job, limit=args.limit)
    if args.json:
        keys = ("job", "scheduled_for", "started_at", "finished_at", "status", "attempt", "error", "clock",
                "run_id", "duration_ms", "reason")  # fmt: skip
        print(json.dumps({"runs": [{k: run.as_json()[k] for k in keys} for run in runs]}, indent=2))
    else:
        print(format_history(runs))
    return EXIT_OK


def cmd_status(args: argparse.Namespace, clock: Clock) -> int:
    from dynoclock.cli.tables import format_status
    from dynoclock.observe.status import job_statuses

    schedule = _load(args, view=True)
    statuses = job_statuses(schedule, _ledger(), clock=clock)
    if args.json:
        print(json.dumps({"jobs": [st.as_json() for st in statuses]}, indent=2))
    else:
        print(format_status(statuses))
    return EXIT_OK


def cmd_crontab(args: argparse.Namespace, clock: Clock) -> int:
    schedule = _load(args, view=True)
    # Cron has no $CLOCK_SCHEDULE: a schedule chosen through it must be named on each line.
    text, left_out = render(schedule, args.prefix, args.config or os.environ.get("CLOCK_SCHEDULE"))
    print(text, end="")
    for item in left_out:
        print(f"crontab: {item.job.id} left out: {item.reason}", file=sys.stderr)
    return EXIT_FAILED if left_out else EXIT_OK


def cmd_ui(args: argparse.Namespace, clock: Clock) -> int:
    from dynoclock.ui import serve

    return serve(args.config, args.host, args.port, clock)


def cmd_check(args: argparse.Namespace, clock: Clock) -> int:
    schedule = _load(args, now=clock.now())
    check_environment(schedule)
    enabled = sum(job.enabled for job in schedule.jobs.values())
    print(f"{schedule.file}: ok, {len(schedule.jobs)} jobs ({enabled} enabled)")
    return EXIT_OK


def cmd_next(args: argparse.Namespace, clock: Clock) -> int:
    if args.count < 1:
        print("next: --count must be at least 1", file=sys.stderr)
        return EXIT_INVALID
    schedule = _load(args, view=True)
    now = clock.now()
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            print(
                f"next: --now: expected an ISO-8601 time like 2026-03-08T06:00:00Z, got {args.now!r}", file=sys.stderr
            )
            return EXIT_INVALID
        if now.tzinfo is None:
            now = now.replace(tzinfo=schedule.zone)
    try:
        rows = [_next_row(job, now, args.count) for job in schedule.jobs.values()]
        stamp = now.astimezone(UTC).isoformat()
    except OverflowError:  # slot math past year 9999 or before year 1
        print(f"next: --now: {args.now!r} is too close to the ends of the calendar", file=sys.stderr)
        return EXIT_INVALID
    rows += [{**_next_row(job, now, args.count), "origin": "api"} for job in _api_jobs(set(schedule.jobs))]
    paused = _paused_jobs()
    if paused is not None:
        for row in rows:
            row["paused"] = row["id"] in paused
    if args.json:
        print(json.dumps({"now": stamp, "jobs": rows}, indent=2))
        return EXIT_OK
    for row in rows:
        state = ("" if row["enabled"] else "  [disabled]") + ("  [paused]" if row.get("paused") else "")
        state += "  [api]" if row.get("origin") == "api" else ""
        print(f"{row['id']}: {row['schedule']} ({row['timezone']}){state}")
        if not row["next"]:
            print("    (no upcoming runs)")
        for i, slot in enumerate(row["next"]):
            extra = f"  (starts {row['starts'][i]}, jitter)" if "starts" in row else ""
            print(f"    {slot}{extra}")
    return EXIT_OK


def _paused_jobs() -> set[str] | None:
    """Jobs paused from the status page; None (say nothing about pauses) when the state cannot be read.

    An SQLite state file is read with the stdlib, read-only: `next` stays fast and creates nothing."""
    from dynoclock.state.location import state_url  # loads no database driver

    url = state_url()
    try:
        if url.startswith("sqlite:///"):
            import sqlite3
            from contextlib import closing
            from pathlib import Path

            uri = Path(url[len("sqlite:///") :].split("?")[0]).absolute().as_uri() + "?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=2)) as conn:
                return {job for (job,) in conn.execute("SELECT job FROM clock_paused")}
        from dynoclock.state.controls import Controls
        from dynoclock.state.ledger import Ledger

        return set(Controls(Ledger(url)).paused())
    except Exception:
        return None


def _api_jobs(skip: set[str]) -> list[Job]:
    """The jobs added from the app, when the state can be read (an SQLite file only if it exists: `next` creates
    nothing); none otherwise."""
    from dynoclock.state.location import state_url

    url = state_url()
    try:
        if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :].split("?")[0]):
            return []
        from dynoclock.observe.status import api_jobs
        from dynoclock.state.ledger import Ledger

        return api_jobs(Ledger(url), skip)
    except Exception:
        return []


def _next_row(job: Job, now: datetime, count: int) -> NextRow:
    slots = upcoming(job.trigger, now, count, job.window) if job.enabled else []
    row: NextRow = {
        "id": job.id,
        "enabled": job.enabled,
        "trigger": job.trigger_key,
        "spec": job.trigger_text,
        "schedule": job.describe(),
        "timezone": job.zone.key,
        "next": [slot.astimezone(job.zone).isoformat() for slot in slots],
    }
    if job.jitter:
        row["starts"] = [(s + jitter_offset(job.id, s, job.jitter)).astimezone(job.zone).isoformat() for s in slots]
    return row
