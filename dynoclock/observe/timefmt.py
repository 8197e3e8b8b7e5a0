"""How instants and measured durations are written, everywhere the clock writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with a Z: the one spelling of instants in env, headers, logs and history."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
