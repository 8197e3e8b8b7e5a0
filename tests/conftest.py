"""Registers the fixtures of tests/support/ for every test module, and keeps the ``slow`` tests to CI.

The parts themselves live in tests/support/; a test module imports the helpers it calls from there and asks
for fixtures by name. Local ``pytest`` deselects the tests marked ``slow``; they run under ``CI=true`` (as
``.ci/run`` sets it), with ``--slow``, or when ``-m`` picks the tests explicitly (``-m slow``).
"""

from __future__ import annotations

import pytest

# Helpers' own asserts (rows_by_slot, schema_of, csrf_of...) report their values like a test's do.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.http",
    "tests.support.netns",
    "tests.support.pgbouncer",
    "tests.support.postgres",
    "tests.support.processes",
    "tests.support.redis",
    "tests.support.state",
    "tests.support.ui",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (as CI=true does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.support.services import in_ci  # after register_assert_rewrite above

    if in_ci() or config.getoption("--slow") or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
