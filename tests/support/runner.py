"""A Runner in the test's own process on a schedule file, with its event log captured in memory."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dynoclock.config.loader import Schedule, load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.run.outcome import Outcome
from dynoclock.run.runner import Runner


class Captured:
    """An EventLog writing JSON lines to memory, read back as dicts."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.log = EventLog(self.stream, fmt="json")

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def of(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event and all(e.get(k) == v for k, v in match.items())]

    def names(self, **match: Any) -> list[str]:
        """Event names in order, for the events matching ``match``."""
        return [e["event"] for e in self.events if all(e.get(k) == v for k, v in match.items())]


def now_slot() -> datetime:
    """A slot as the scheduler would pass it: a whole second, in UTC."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Harness:
    """A Runner on a schedule file, with its events captured."""

    schedule: Schedule
    captured: Captured = field(default_factory=Captured)
    runner: Runner = field(init=False)

    def __post_init__(self) -> None:
        self.runner = Runner(self.schedule, self.captured.log, clock_id="test")

    @classmethod
    def load(cls, path: Path, env: dict[str, str] | None = None) -> Harness:
        return cls(load_schedule(str(path), env={**os.environ, **(env or {})}))

    def run(self, job_id: str, slot: datetime | None = None, retries: bool = True) -> Outcome:
        return self.runner.execute(self.schedule.jobs[job_id], slot or now_slot(), retries=retries)

    def wait_running(self, job_id: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until ``count`` attempts of ``job_id`` have started (state, not time, decides)."""
        deadline = time.monotonic() + timeout
        while len(self.captured.of("run.start", job=job_id)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{job_id} never started: {self.captured.events}")
            time.sleep(0.02)
