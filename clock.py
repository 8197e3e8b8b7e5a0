"""Entry point of the clock process: ``python clock.py [COMMAND]`` (see README.md); the same as ``dynoclock``."""

import sys

from dynoclock.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
