"""Durations as people write them in schedule.yaml: ``30s``, ``10m``, ``1h30m``, ``2d``, ``500ms``.

``format_duration`` writes a schedule's duration back in those same words, for messages that quote the
schedule (``timeout=1h30m exceeded``). How long a run *took*, measured in ms, is another thing, written for
reading by ``observe.timefmt.duration_text`` (``2.5 s``).
"""

from __future__ import annotations

import re
from datetime import timedelta

from dynoclock.config.problems import Invalid

_PART = re.compile(r"([0-9]+)(ms|w|d|h|m|s)")  # ASCII digits only (\d also matches '١' or '²')
_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_ORDER = ["w", "d", "h", "m", "s", "ms"]
# Far beyond any sensible interval or timeout, and small enough that slot math stays inside the calendar.
MAX = timedelta(days=3650)


def parse_duration(value: object, *, allow_zero: bool = False) -> timedelta:
    """Parse ``value`` or raise Invalid. Bare numbers are refused: ``every: 5`` is ambiguous."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"expected a duration like 30s, 10m or 1h30m, got {_show(value)}")
    if isinstance(value, (int, float)):
        raise Invalid(f"expected a duration with a unit like {value}s or {value}m, got {value}")
    text = value.strip().replace(" ", "")
    pos, total, seen = 0, timedelta(0), -1
    for m in _PART.finditer(text):
        unit_rank = _ORDER.index(m.group(2))
        if m.start() != pos or unit_rank <= seen:
            break
        seen = unit_rank
        try:
            total += int(m.group(1)) * _UNITS[m.group(2)]
        except OverflowError:
            total = MAX * 2
        pos = m.end()
    if not text or pos != len(text):
        raise Invalid(f"expected a duration like 30s, 10m or 1h30m, got {_show(value)}")
    if total > MAX:
        raise Invalid(f"expected a duration of at most 3650d (about 10 years), got {_show(value)}")
    if total <= timedelta(0) and not allow_zero:
        raise Invalid(f"expected a duration greater than zero, got {_show(value)}")
    return total


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_duration, in the same words: 5400 s -> ``1h30m``."""
    ms = round(delta.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit in _ORDER:
        size = round(_UNITS[unit].total_seconds() * 1000)
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)
