"""The one error type for bad input: every problem, each with its file, line and key path."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from dynoclock.config.source import Path, Source

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the schedule, located as precisely as we can."""

    file: str
    line: int | None
    path: str  # dotted key path, e.g. "jobs.import-feeds.every"; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if not where:  # a job given from the app: no file, the key path says where
            return f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised with all the problems found in a schedule, not only the first."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Invalid(ValueError):
    """Raised by a value parser; the caller adds file, line and key path."""


class Report:
    """Problems (fatal) and warnings found in one schedule file."""

    def __init__(self, source: Source):
        self.source = source
        self.problems: list[Problem] = list(source.problems)
        self.warnings: list[Problem] = []
        # Values already reported (unreadable YAML, a ${VAR} that failed): one problem per cause, not parsed.
        self.reported: set[Path] = set(source.unreadable)

    def _at(self, path: Path, message: str) -> Problem:
        from dynoclock.config.source import dotted

        return Problem(self.source.file, self.source.line(path), dotted(path), message)

    def error(self, path: Path, message: str) -> None:
        self.problems.append(self._at(path, message))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(self._at(path, message))

    def parse(self, path: Path, value: object, parser: Callable[[object], T]) -> T | None:
        """``parser(value)``, or None after recording its complaint against ``path``."""
        if path in self.reported:
            return None
        try:
            return parser(value)
        except Invalid as exc:
            self.error(path, str(exc))
            return None

    def check_keys(self, path: Path, mapping: Mapping[str, object], allowed: Collection[str]) -> None:
        """Unknown keys are errors: a typo must never silently disable a setting."""
        for key in mapping:
            if key not in allowed:
                import difflib  # here: most schedules have no unknown key

                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; expected one of: {', '.join(sorted(allowed))}"
                self.error((*path, key), f"unknown key '{key}'{hint}")

    def raise_if_failed(self) -> None:
        if self.problems:
            # A bad default is seen once per job that uses it: report it once, in file order.
            unique = list(dict.fromkeys(self.problems))
            raise ConfigError(sorted(unique, key=lambda p: p.line or 0))
