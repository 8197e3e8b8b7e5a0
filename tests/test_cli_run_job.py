"""``python clock.py run JOB``: one run now, its outcome printed, and an exit code to script with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import run_cli

Write = Callable[[str], Path]

SCHEDULE = """
jobs:
  works:
    every: 1h
    python: tests.jobs_for_tests:echo_args
    args: [42]
  fails:
    every: 1h
    retries: 3
    retry_delay: 10m
    command: [sh, -c, "echo nearly; exit 3"]
"""


@pytest.fixture
def run_job(write_schedule: Write, tmp_path: Path) -> Callable[[str], tuple[int, str, str]]:
    path = write_schedule(SCHEDULE)

    def run(job: str) -> tuple[int, str, str]:
        result = run_cli("run", job, "-c", str(path), env={"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"})
        return result.returncode, result.stdout, result.stderr

    return run


def test_a_successful_job_exits_0_and_prints_the_outcome(run_job: Callable[[str], tuple[int, str, str]]) -> None:
    code, out, _ = run_job("works")
    assert code == 0
    assert out.splitlines()[-1] == 'works: ok ({"args": [42], "kwargs": {}})'
    assert "event=run.ok job=works" in out


def test_a_failed_job_exits_1_after_one_attempt(run_job: Callable[[str], tuple[int, str, str]]) -> None:
    code, out, _ = run_job("fails")
    assert code == 1
    assert out.splitlines()[-1] == "fails: failed (exit=3: nearly)"
    assert out.count("event=run.start") == 1  # no retries when run by hand
    assert "event=run.retry" not in out


def test_an_unknown_job_exits_2_naming_the_known_ones(run_job: Callable[[str], tuple[int, str, str]]) -> None:
    code, out, err = run_job("nope")
    assert code == 2
    assert "run: no job 'nope'" in err
    assert "(jobs: works, fails)" in err
    assert "Traceback" not in out + err


def test_an_unknown_job_in_a_large_schedule_names_only_the_first_ten(write_schedule: Write, tmp_path: Path) -> None:
    path = write_schedule(
        "jobs:\n" + "".join(f"  job-{n:03d}:\n    every: 1h\n    command: ['true']\n" for n in range(25))
    )
    done = run_cli("run", "nope", "-c", str(path), env={"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"})
    assert done.returncode == 2
    names = ", ".join(f"job-{n:03d}" for n in range(10))
    assert f"(jobs: {names}, and 15 more)" in done.stderr
