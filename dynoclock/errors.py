"""The one error type for bad input: every problem, each with its file, line and key path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the schedule, located as precisely as we can."""

    file: str
    line: int | None
    path: str  # dotted key path, e.g. "jobs.import-feeds.every"; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised with all the problems found in a schedule, not only the first."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Invalid(ValueError):
    """Raised by a value parser; the caller adds file, line and key path."""
