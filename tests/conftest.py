"""Registers the fixtures of tests/support/ for every test module.

The parts themselves live in tests/support/; a test module imports the helpers it calls from there and asks
for fixtures by name.
"""

from __future__ import annotations

import pytest

# Helpers' own asserts (rows_by_slot, schema_of, csrf_of...) report their values like a test's do.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.http",
    "tests.support.postgres",
    "tests.support.processes",
    "tests.support.redis",
    "tests.support.state",
    "tests.support.ui",
]

