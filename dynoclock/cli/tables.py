"""The tables `history` and `status` print."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from dynoclock.observe.status import JobStatus
from dynoclock.observe.timefmt import duration_text
from dynoclock.state.runs import Run


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
                duration_text(run.duration_ms),
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
        schedule += " [api]" if st.job.origin == "api" else ""
        if st.last is None:
            last = "never ran"
        else:
            last = f"{st.last.status} {duration_text(st.last.duration_ms)} at {_when(st.last.scheduled_for)}".replace(
                "  ", " "
            )
        nxt = _when(st.next_run.astimezone(st.job.zone)) if st.next_run else "-"
        rows.append((st.job.id, schedule, nxt, last, str(st.failures_in_a_row)))
    return _table(rows)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S%z").replace("+0000", "Z")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
