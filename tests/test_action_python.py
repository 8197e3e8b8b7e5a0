"""``python:`` jobs calling functions in tests/jobs_for_tests.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from dynoclock.observe.timefmt import iso_utc
from tests.support.runner import Harness, now_slot

Write = Callable[[str], Path]
JOBS = "tests.jobs_for_tests"


def python_job(func: str, extra: str = "", timeout: str = "30s") -> str:
    return f"jobs:\n  task:\n    every: 1h\n    timeout: {timeout}\n    python: {JOBS}:{func}\n{extra}"


def test_args_and_kwargs_reach_the_function(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(python_job("echo_args", "    args: [1, two]\n    kwargs: {limit: 100, dry_run: true}\n"))
    )
    outcome = h.run("task")
    assert outcome.status == "ok"
    assert json.loads(outcome.detail) == {"args": [1, "two"], "kwargs": {"dry_run": True, "limit": 100}}
    [ok] = h.captured.of("run.ok", job="task")
    assert json.loads(ok["detail"]) == json.loads(outcome.detail)  # the return value is logged


def test_a_run_parameter_receives_the_runs_context(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(python_job("describe_run")))
    slot = now_slot()
    outcome = h.run("task", slot)
    [start] = h.captured.of("run.start", job="task")
    assert outcome.detail == f"job=task scheduled_for={iso_utc(slot)} run_id={start['run_id']} attempt=1"


def test_an_exception_fails_the_run_with_its_text(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(python_job("explode", "    kwargs: {message: no feeds today}\n")))
    outcome = h.run("task")
    assert (outcome.status, outcome.error) == ("failed", "ValueError: no feeds today")
    [failed] = h.captured.of("run.failed", job="task")
    assert failed["error"] == "ValueError: no feeds today"


def test_sys_exit_and_keyboard_interrupt_in_a_job_only_fail_that_run(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(
            f"""
jobs:
  exits: {{every: 1h, python: "{JOBS}:exit_interpreter"}}
  interrupts: {{every: 1h, python: "{JOBS}:interrupt"}}
  fine: {{every: 1h, python: "{JOBS}:echo_args"}}
"""
        )
    )
    exits, interrupts = h.run("exits"), h.run("interrupts")
    assert (exits.status, exits.error) == ("failed", "SystemExit: 3")
    assert (interrupts.status, interrupts.error) == ("failed", "KeyboardInterrupt: job pressed Ctrl-C")
    assert h.run("fine").status == "ok"  # the runner is unharmed


def test_a_missing_function_fails_the_run_in_the_schedules_words(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(python_job("no_such_function")))
    outcome = h.run("task")
    assert (outcome.status, outcome.error) == (
        "failed",
        f"python={JOBS}:no_such_function: {JOBS} has no no_such_function",
    )


def test_a_pure_python_endless_loop_is_stopped_at_its_timeout(write_schedule: Write, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    h = Harness.load(write_schedule(python_job("spin_forever", f"    kwargs: {{marker: '{marker}'}}\n", "1s")))
    outcome = h.run("task")
    assert (outcome.status, outcome.error) == ("timeout", "timeout=1s exceeded")
    assert marker.read_text().startswith("stopped after")  # the loop itself ended: nothing left spinning
    assert h.captured.names(job="task") == ["run.start", "run.timeout"]


# ---- isolate: process ------------------------------------------------------------------------


def test_in_a_worker_process_arguments_the_run_parameter_output_and_errors_work_as_in_a_thread(
    write_schedule: Write,
) -> None:
    h = Harness.load(
        write_schedule(
            f"""defaults:
  isolate: process
jobs:
  echo: {{every: 1h, python: "{JOBS}:echo_args", args: [1, two], kwargs: {{limit: 100}}}}
  described: {{every: 1h, python: "{JOBS}:describe_run"}}
  says: {{every: 1h, python: "{JOBS}:say", kwargs: {{text: hello from the worker}}}}
  explodes: {{every: 1h, python: "{JOBS}:explode", kwargs: {{message: no feeds today}}}}
  exits: {{every: 1h, python: "{JOBS}:exit_interpreter"}}
  missing: {{every: 1h, python: "{JOBS}:no_such_function"}}
"""
        )
    )
    echo = h.run("echo")
    assert json.loads(echo.detail) == {"args": [1, "two"], "kwargs": {"limit": 100}}
    slot = now_slot()
    described = h.run("described", slot)
    [start] = h.captured.of("run.start", job="described")
    assert described.detail == f"job=described scheduled_for={iso_utc(slot)} run_id={start['run_id']} attempt=1"
    says = h.run("says")
    assert says.status == "ok" and int(says.detail) != os.getpid()  # it ran in another process
    [line] = h.captured.of("run.output", job="says")
    assert line["line"] == "hello from the worker"
    assert (h.run("explodes").status, h.run("explodes").error) == ("failed", "ValueError: no feeds today")
    assert h.run("exits").status == "failed"
    assert h.run("says").detail == says.detail  # sys.exit failed its run only: the same worker goes on
    assert h.run("missing").error == f"python={JOBS}:no_such_function: {JOBS} has no no_such_function"


def test_the_app_is_made_once_per_worker_process(write_schedule: Write, tmp_path: Path) -> None:
    made = tmp_path / "made.log"
    os.environ["APP_MADE_LOG"] = str(made)  # the worker process inherits it
    try:
        h = Harness.load(
            write_schedule(
                f"""jobs:
  a: {{every: 1h, isolate: process, app: "{JOBS}:make_counting_app", python: "{JOBS}:say", kwargs: {{text: a}}}}
  b: {{every: 1h, isolate: process, app: "{JOBS}:make_counting_app", python: "{JOBS}:say", kwargs: {{text: b}}}}
"""
            )
        )
        pids = {h.run(job).detail for job in ("a", "b", "a", "b")}
    finally:
        del os.environ["APP_MADE_LOG"]
    assert made.read_text().split() == sorted(pids)  # one worker, shared by the jobs of one app, made it once
