"""``python -m dynoclock [COMMAND]``: the same commands as ``python clock.py``."""

import sys

from dynoclock import signals

signals.hold()  # before the imports below: a SIGTERM during start-up must stop the clock cleanly, not kill it

from dynoclock.cli.main import main  # noqa: E402

sys.exit(main())
