"""The clock's state database in the tests: ``state_db`` (an SQLite file, or a Postgres schema of the test's
own: every test using it runs on both), a ``store`` Ledger on it, and reading the ledger back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported where used: a broken engine module must not break every test's collection
    from dynoclock.state.ledger import Ledger
    from dynoclock.state.runs import Run


def forget_engine(url: str) -> None:
    """Close the pooled engine the test process made for ``url`` (engines.engine_for caches one per URL)."""
    from dynoclock.state import engines

    for state in (False, True):
        engine = engines._engines.pop((engines.normalize_url(url), state), None)
        if engine is not None:
            engine.dispose()


@pytest.fixture(name="state_db", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_db_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The state URL of this test: an SQLite file in tmp_path, or a Postgres schema of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        yield url
        forget_engine(url)
    else:
        yield request.getfixturevalue("pg_schema_url")  # its engine is forgotten with the schema


@pytest.fixture(name="store")
def store_fixture(state_db: str) -> Iterator[Ledger]:
    """A Ledger with its schema ensured, on SQLite and on Postgres."""
    from dynoclock.state.ledger import Ledger

    ledger = Ledger(state_db)
    ledger.ensure_schema()
    yield ledger
    forget_engine(state_db)


def all_runs(ledger: Ledger, job: str | None = None) -> list[Run]:
    """Every row of the ledger, oldest slot first."""
    return list(reversed(ledger.history(job, limit=1_000_000)))


def rows_by_slot(ledger: Ledger, job: str) -> dict[datetime, Run]:
    runs = all_runs(ledger, job)
    by_slot = {run.scheduled_for: run for run in runs}
    assert len(by_slot) == len(runs), "two rows for one slot"
    return by_slot
