"""How instants and measured durations are written, everywhere the clock writes them.

Two different things are called durations here. A *measured* duration (how long a run took, in ms) is written
by ``duration_text`` (``850 ms``, ``2.5 s``, ``3 min 20 s``), the same in the CLI's tables and on the status page.
A duration *in the schedule* (``timeout: 1h30m``) is written in the schedule's own words by
``config.durations.format_duration``, so that messages quote what the user wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def iso_utc(moment: datetime, timespec: str = "auto") -> str:
    """ISO-8601 in UTC with a Z: the one spelling of instants in env, headers, logs and history.

    ``timespec`` as for ``datetime.isoformat`` (log lines use ``milliseconds``)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def duration_text(ms: int | None) -> str:
    """A measured duration, for reading: ``850 ms``, ``2.5 s``, ``3 min 20 s``, ``2 h 5 min``; ``-`` when unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    tenths = round(ms / 100)
    if tenths < 600:
        return f"{tenths / 10:.1f} s"
    seconds = round(ms / 1000)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def to_ms(delta: timedelta) -> int:
    """A measured duration in whole milliseconds, as logs and history keep it."""
    return round(delta.total_seconds() * 1000)
