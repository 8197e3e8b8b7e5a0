"""What the pages show, as plain rows: only ids, schedules in words, zones, times, statuses, durations and
redacted error texts. Nothing here ever reads a job's action spec (URLs, headers, SQL, commands)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from dynoclock.config.loader import Job
from dynoclock.observe.redact import redact
from dynoclock.observe.status import JobStatus
from dynoclock.observe.timefmt import duration_text
from dynoclock.state.ledger import DEAD_AFTER
from dynoclock.state.runs import Run

if TYPE_CHECKING:
    from dynoclock.state.controls import PendingRequest
    from dynoclock.state.runs import ClockBeat


@dataclass(frozen=True)
class JobRow:
    id: str
    schedule: str
    zone: str
    enabled: bool
    runnable: bool  # has an action this clock can run (a disabled job may name unset variables)
    kind: str
    description: str
    next_run: str
    next_in: str
    last_status: str | None
    last_duration: str
    last_when: str
    last_ago: str
    last_error: str
    failures: int
    paused: bool
    paused_since: str
    paused_by: str
    requested: int  # "run now" requests not yet taken by the leader
    origin: str = "schedule"  # or api: added from the app, which the page may delete


@dataclass(frozen=True)
class RunRow:
    scheduled_for: str
    started: str
    status: str
    reason: str
    attempt: int
    duration: str
    clock: str
    error: str


@dataclass(frozen=True)
class ClockRow:
    clock: str
    role: str
    started: str
    heartbeat: str
    heartbeat_ago: str
    silent: bool


@dataclass(frozen=True)
class ClockState:
    leader: ClockRow | None
    rows: list[ClockRow]

    @property
    def standbys(self) -> list[ClockRow]:
        return [row for row in self.rows if row.role == "standby" and not row.silent]


def job_row(
    status: JobStatus, paused: Mapping[str, tuple[datetime, str]], pending: Mapping[str, int], now: datetime
) -> JobRow:
    job, last = status.job, status.last
    since, by = paused.get(job.id, (None, ""))
    return JobRow(
        id=job.id,
        schedule=job.describe(),
        zone=job.zone.key,
        enabled=job.enabled,
        runnable=job.runnable,
        kind=job.kind,
        description=redact(job.description),
        next_run=when(status.next_run, job.zone),
        next_in=relative(status.next_run, now),
        last_status=last.status if last else None,
        last_duration=duration_text(last.duration_ms) if last else "",
        last_when=when(last.scheduled_for, job.zone) if last else "",
        last_ago=relative(last.finished_at or last.started_at or last.scheduled_for, now) if last else "",
        last_error=redact(last.error or "") if last else "",
        failures=status.failures_in_a_row,
        paused=status.paused,
        paused_since=relative(since, now) if since else "",
        paused_by=redact(by),
        requested=pending.get(job.id, 0),
        origin=job.origin,
    )


def run_row(run: Run, job: Job | None) -> RunRow:
    zone = job.zone if job else None
    return RunRow(
        scheduled_for=when(run.scheduled_for, zone),
        started=when(run.started_at, zone),
        status=run.status,
        reason=run.reason,
        attempt=run.attempt,
        duration=duration_text(run.duration_ms),
        clock=redact(run.clock),
        error=redact(run.error or ""),
    )


def clock_state(clocks: Iterable[ClockBeat], now: datetime) -> ClockState:
    rows = []
    for clock in clocks:
        beat: datetime = clock["heartbeat_at"]
        rows.append(
            ClockRow(
                clock=redact(str(clock["clock"])),
                role=str(clock["role"]),
                started=when(clock["started_at"]),
                heartbeat=when(beat),
                heartbeat_ago=relative(beat, now),
                silent=now - beat > DEAD_AFTER,  # a clock silent this long is taken for dead
            )
        )
    leader = next((row for row in rows if row.role == "leader" and not row.silent), None)
    return ClockState(leader, rows)


def pending_by_job(requests: Iterable[PendingRequest]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in requests:
        counts[request["job"]] = counts.get(request["job"], 0) + 1
    return counts


def when(moment: datetime | None, zone: ZoneInfo | None = None) -> str:
    """``2026-03-08 03:00:00 EDT`` in the job's zone, or UTC."""
    if moment is None:
        return "-"
    local = moment.astimezone(zone or UTC)
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "")


def relative(moment: datetime | None, now: datetime) -> str:
    """``in 4 min`` / ``12 s ago``: rough, for reading at a glance."""
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    amount = abs(seconds)
    if amount < 1:
        return "now"
    if amount < 90:
        text = f"{amount:.0f} s"
    elif amount < 90 * 60:
        text = f"{amount / 60:.0f} min"
    elif amount < 36 * 3600:
        text = f"{amount / 3600:.0f} h"
    else:
        text = f"{amount / 86400:.0f} d"
    return f"in {text}" if seconds > 0 else f"{text} ago"
