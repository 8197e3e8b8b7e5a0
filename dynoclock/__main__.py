"""``dynoclock [COMMAND]`` and ``python -m dynoclock [COMMAND]``: the same commands as ``python clock.py``."""

import sys

from dynoclock import signals


def main() -> int:
    signals.hold()  # before the imports below: a SIGTERM during start-up must stop the clock cleanly, not kill it
    from dynoclock.cli.args import parse_args, runs_the_clock
    from dynoclock.daemon import supervisor

    if runs_the_clock(parse_args(sys.argv[1:])) and supervisor.wanted():
        return supervisor.Supervisor().run()  # it reads no schedule: the scheduler child does (daemon/supervisor.py)
    from dynoclock.cli.main import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
