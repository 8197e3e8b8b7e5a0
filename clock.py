"""Entry point of the clock process: ``python clock.py [COMMAND]`` (see README.md)."""

import sys

from dynoclock import signals

signals.hold()  # before the imports below: a SIGTERM during start-up must stop the clock cleanly, not kill it

from dynoclock.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
