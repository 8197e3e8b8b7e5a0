"""What ran and what comes next, read from the ledger: the ``history`` and ``status`` commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import Job, Schedule
from .ledger import Controls, Ledger, Run

FAILED = ("failed", "timeout", "interrupted", "missed")


@dataclass(frozen=True)
class JobStatus:
    job: Job
    next_run: datetime | None
    last: Run | None
    failures_in_a_row: int
    paused: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "schedule": self.job.describe(),
            "timezone": self.job.zone.key,
            "enabled": self.job.enabled,
            "next": self.next_run.astimezone(self.job.zone).isoformat() if self.next_run else None,
            "last": self.last.as_json() if self.last else None,
            "failures_in_a_row": self.failures_in_a_row,
            "paused": self.paused,
        }


def job_statuses(schedule: Schedule, ledger: Ledger, now: datetime | None = None) -> list[JobStatus]:
    now = now or datetime.now(UTC)
    paused = Controls(ledger).paused()
    out = []
    for job in schedule.jobs.values():
        recent = [run for run in ledger.history(job.id, limit=50) if run.status not in ("claimed", "skipped")]
        streak = 0
        for run in recent:
            if run.status == "running":
                continue
            if run.status not in FAILED:
                break
            streak += 1
        next_run = job.next_after(now) if job.enabled else None
        out.append(JobStatus(job, next_run, recent[0] if recent else None, streak, job.id in paused))
    return out


def format_history(runs: list[Run]) -> str:
    if not runs:
        return "no runs recorded yet"
    header = ("SCHEDULED_FOR", "JOB", "STATUS", "ATTEMPT", "DURATION", "CLOCK", "ERROR")
    rows = [header]
    for run in runs:
        rows.append(
            (
                _when(run.scheduled_for),
                run.job,
                run.status,
                str(run.attempt),
                _duration(run.duration_ms),
                run.clock,
                (run.error or "")[:80],
            )
        )
    return _table(rows)


def format_status(statuses: list[JobStatus]) -> str:
    header = ("JOB", "SCHEDULE", "NEXT", "LAST", "FAILURES")
    rows = [header]
    for st in statuses:
        schedule = f"{st.job.describe()} ({st.job.zone.key})" + ("" if st.job.enabled else " [disabled]")
        schedule += " [paused]" if st.paused else ""
        if st.last is None:
            last = "never ran"
        else:
            last = f"{st.last.status} {_duration(st.last.duration_ms)} at {_when(st.last.scheduled_for)}".replace(
                "  ", " "
            )
        nxt = _when(st.next_run.astimezone(st.job.zone)) if st.next_run else "-"
        rows.append((st.job.id, schedule, nxt, last, str(st.failures_in_a_row)))
    return _table(rows)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S%z").replace("+0000", "Z")


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
