"""Shared fixtures: a schedule file written from text, and the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_schedule(tmp_path: Path) -> Callable[[str], Path]:
    """Write ``text`` to a schedule.yaml in a temporary folder and return its path."""

    def write(text: str, name: str = "schedule.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python clock.py ARGS`` as a real process and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCK_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "clock.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
