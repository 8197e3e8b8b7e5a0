"""How one attempt of a run ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass
class Outcome:
    """How one attempt ended."""

    status: str  # ok | failed | timeout | interrupted | skipped (and, unreported: released, abandoned, ...)
    detail: str = ""  # what an ok run reports (status=200, rows=3, exit=0)
    error: str = ""  # why it failed, in the schedule's words
    attempt: int = 1
    duration: timedelta = field(default_factory=timedelta)
