"""The command line's parser, and the check ``python clock.py`` makes before it: whether the arguments run the
clock, so that its supervisor (daemon/supervisor.py) starts before anything else is imported (argparse included:
the supervisor process keeps what it imported) or the schedule is read."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

COMMANDS = ("run", "check", "next", "history", "status", "crontab", "ui")


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="clock.py", description="A clock process for PaaS apps.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default=None, help="schedule file (default: $CLOCK_SCHEDULE, ./schedule.yaml)")
        return p

    run = with_config(sub.add_parser("run", help="run the clock (default), or one job once, now"))
    run.add_argument("job", nargs="?", help="run only this job, once, in the foreground; exit 0 ok, 1 failed")
    with_config(sub.add_parser("check", help="validate the schedule; exit 0 ok, 2 invalid"))
    nxt = with_config(sub.add_parser("next", help="upcoming fire times per job"))
    nxt.add_argument("--count", type=int, default=5, help="fire times per job (default 5)")
    nxt.add_argument("--now", default=None, help="ISO-8601 instant to count from (default: now)")
    nxt.add_argument("--json", action="store_true", help="machine-readable output")
    hist = sub.add_parser("history", help="past runs from the run ledger")
    hist.add_argument("--job", default=None, help="only this job")
    hist.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    hist.add_argument("--json", action="store_true", help="machine-readable output")
    status = with_config(sub.add_parser("status", help="per job: schedule, next run, last result, failures in a row"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    cron = with_config(sub.add_parser("crontab", help="the schedule as crontab lines; exit 1 if some jobs cannot be"))
    cron.add_argument("--prefix", default="", help="put before 'python clock.py', e.g. 'cd /app && .venv/bin/'")
    ui = with_config(sub.add_parser("ui", help="the status page, standalone (normally mounted in the web app)"))
    ui.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed; no command means ``run`` (`python clock.py [-c FILE]` runs the clock)."""
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    return build_parser().parse_args(argv)


def runs_the_clock(args: argparse.Namespace) -> bool:
    """Whether these arguments run the daemon (``run`` without a job)."""
    return bool(args.command == "run" and args.job is None)


def plainly_runs_the_clock(argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs the daemon in a form the parser surely reads so: ``[run] [-c FILE | --config FILE |
    --config=FILE]...``. False says nothing: the parser decides (other commands, a job, abbreviations, help, errors)."""
    rest = list(argv[1:] if argv[:1] == ["run"] else argv)
    while rest:
        option = rest.pop(0)
        if option.startswith("--config="):
            continue
        if option not in ("-c", "--config") or not rest or rest[0].startswith("-"):
            return False
        rest.pop(0)
    return True
