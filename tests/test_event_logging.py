"""Events through the stdlib ``logging`` logger ``dynoclock`` (CLOCK_LOG=logging, use_logging, EventLog(to=...))."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dynoclock.config.loader import load_schedule
from dynoclock.observe import logs
from dynoclock.observe.logs import EventLog, use_logging
from dynoclock.run.runner import Runner
from tests.support.logs import logfmt_fields
from tests.support.runner import now_slot

Write = Callable[[str], Path]
JOBS = "tests.jobs_for_tests"
SECRET = "s3cr3t-value-for-logging-test"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("dynoclock")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def schedule(write_schedule: Write, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOGGING_TEST_TOKEN", SECRET)
    return write_schedule(
        f"""
jobs:
  digest: {{every: 1h, python: "{JOBS}:echo_args", args: ["${{LOGGING_TEST_TOKEN}}"]}}
  broken: {{every: 1h, python: "{JOBS}:explode", kwargs: {{message: "bad ${{LOGGING_TEST_TOKEN}}"}}}}
"""
    )


def test_a_real_run_reaches_a_logging_handler_with_levels_fields_and_no_secret(
    write_schedule: Write, monkeypatch: pytest.MonkeyPatch, captured: Capture
) -> None:
    plan = load_schedule(str(schedule(write_schedule, monkeypatch)))
    stream = io.StringIO()
    runner = Runner(plan, EventLog(stream, fmt="logfmt", to="logging"))
    slot = now_slot()
    runner.execute(plan.jobs["digest"], slot)
    runner.execute(plan.jobs["broken"], slot)
    assert stream.getvalue() == ""  # to logging instead of the stream
    records = [r for r in captured.records if r.name == "dynoclock"]
    by_event = {r.dynoclock["event"]: r for r in records}  # type: ignore[attr-defined]
    assert list(by_event) == ["run.start", "run.ok", "run.failed"]
    ok, failed = by_event["run.ok"], by_event["run.failed"]
    assert (ok.levelno, failed.levelno) == (logging.INFO, logging.ERROR)
    assert logfmt_fields(ok.getMessage())["event"] == "run.ok"  # the logfmt line is the message
    assert ok.job == "digest" and ok.status == "ok"  # type: ignore[attr-defined]
    assert isinstance(ok.duration_ms, int)  # type: ignore[attr-defined]
    assert failed.dynoclock["error"] == "ValueError: bad ***"  # type: ignore[attr-defined]
    for record in records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.__dict__)


def test_clock_log_variable_and_both(write_schedule: Write, monkeypatch: pytest.MonkeyPatch, captured: Capture) -> None:
    plan = load_schedule(str(schedule(write_schedule, monkeypatch)))
    monkeypatch.setenv("CLOCK_LOG", "both")
    stream = io.StringIO()
    runner = Runner(plan, EventLog(stream, fmt="json"))
    runner.execute(plan.jobs["digest"], now_slot())
    assert stream.getvalue().count("\n") == 2
    assert [r.dynoclock["event"] for r in captured.records] == ["run.start", "run.ok"]  # type: ignore[attr-defined]
    assert captured.records[1].getMessage().startswith("{")  # the JSON line


def test_use_logging_switches_the_process_log_and_warnings_map(captured: Capture) -> None:
    events = EventLog(io.StringIO())
    use_logging(events=events)
    events.emit("ledger.unreachable", level="warning", note="x")
    assert captured.records[-1].levelno == logging.WARNING
    assert events.to == "logging"
    assert logs.log.to in ("stdout", "logging", "both")


def test_with_no_handler_anywhere_events_still_reach_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("dynoclock")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logger, "handlers", [])
    stream = io.StringIO()
    EventLog(stream, to="logging").emit("clock.start")
    assert "event=clock.start" in stream.getvalue()
