"""Run ids: 128 random bits as 32 hex digits (the form of ``uuid.uuid4().hex``), without a system call per id.

``uuid4`` reads ``os.urandom``, which releases the GIL: in a burst of a thousand runs each id handed the GIL to
another thread and waited to get it back. The bits come from a generator of our own, seeded from ``os.urandom``
(as ``random.Random()`` is), and seeded anew in a forked child so that parent and child never share a sequence.
It is not the ``random`` module's shared generator: a job that calls ``random.seed(0)`` must not make two clocks
draw the same ids. Run ids name rows; they are not secrets.
"""

from __future__ import annotations

import os
import random

_bits = random.Random()
os.register_at_fork(after_in_child=_bits.seed)


def new_run_id() -> str:
    return f"{_bits.getrandbits(128):032x}"
