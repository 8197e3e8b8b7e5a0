"""``dynoclock [COMMAND]`` and ``python -m dynoclock [COMMAND]``: the same commands as ``python clock.py``."""

import sys

from dynoclock import signals


def main() -> int:
    signals.hold()  # before the imports below: a SIGTERM during start-up must stop the clock cleanly, not kill it
    from dynoclock.cli.main import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
