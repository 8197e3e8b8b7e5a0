"""Entry point of the clock process: ``python clock.py [COMMAND]`` (see README.md)."""

import sys

from dynoclock.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
