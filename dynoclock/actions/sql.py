"""``sql:`` jobs: statements run in one transaction against the app's database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import Invalid
from ..source import Path
from ..validate import Report, as_nonempty_str, show

JOB_KEYS = ("database",)


@dataclass(frozen=True)
class SqlAction:
    statements: tuple[str, ...]
    database: str | None  # None: $DATABASE_URL at run time


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> SqlAction | None:
    before = len(report.problems)
    statements = report.parse(path, value, as_statements)
    database = None
    if "database" in extras:
        raw, where = extras["database"]
        database = report.parse(where, raw, as_database_url)
    if statements is None or len(report.problems) > before:
        return None
    return SqlAction(statements, database)


def as_statements(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise Invalid("expected an SQL statement or a list of them, got an empty list")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"expected an SQL statement (text), got {show(item)}")
    return tuple(item.strip() for item in items)


def as_database_url(value: Any) -> str:
    url = as_nonempty_str(value).strip()
    if "://" not in url:
        raise Invalid("expected a database URL like postgres://user@host/db or sqlite:///app.db")
    return url
