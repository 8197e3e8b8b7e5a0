"""Reading the clock's logfmt event log (a clock process's output): the one parser of the tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt_fields(line: str) -> dict[str, str]:
    """One logfmt line: ``key=value``, values JSON-quoted when they hold spaces or quotes."""
    fields = {}
    for m in _FIELD.finditer(line):
        value = m.group(2)
        fields[m.group(1)] = json.loads(value) if value.startswith('"') else value
    return fields


def events_in(lines: Iterable[str], event: str | None = None, **match: str) -> Iterator[dict[str, str]]:
    """The logfmt event lines among ``lines`` (of one ``event``, when given, with matching fields), parsed."""
    for line in lines:
        fields = logfmt_fields(line)
        if "event" not in fields or (event is not None and fields["event"] != event):
            continue
        if all(fields.get(k) == v for k, v in match.items()):
            yield fields


def parse_ts(text: str) -> datetime:
    """A timestamp as the clock writes it (``ts=``, ``$CLOCK_SCHEDULED_FOR``), in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)
