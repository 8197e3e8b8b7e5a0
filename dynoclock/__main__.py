"""``dynoclock [COMMAND]`` and ``python -m dynoclock [COMMAND]``: the same commands as ``python clock.py``."""

import sys

from dynoclock import signals


def main() -> int:
    signals.hold()  # before the imports below: a SIGTERM during start-up must stop the clock cleanly, not kill it
    from dynoclock.cli.args import plainly_runs_the_clock
    from dynoclock.daemon import supervisor

    # The supervisor reads no schedule (the scheduler child does: daemon/supervisor.py) and keeps what this process
    # imported, for as long as the clock runs: argparse is imported only when the arguments are not plainly
    # ``[run] [-c FILE]`` (it then says what is wrong with them, as before).
    if supervisor.wanted() and (plainly_runs_the_clock(sys.argv[1:]) or _parsed_runs_the_clock()):
        return supervisor.Supervisor().run()
    from dynoclock.cli.main import main as cli

    return cli()


def _parsed_runs_the_clock() -> bool:
    from dynoclock.cli.args import parse_args, runs_the_clock

    return runs_the_clock(parse_args(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
