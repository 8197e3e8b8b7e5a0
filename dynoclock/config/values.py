"""Collecting problems while reading a schedule, and the small value parsers it uses.

Parsers take a value and raise Invalid with "what was expected, what was found";
``Report`` adds the file, line and key path and keeps going, so the user sees
every problem at once rather than one per run of ``check``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dynoclock.config.durations import parse_duration
from dynoclock.config.envvars import expand
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path, dotted, quoted
from dynoclock.jsontypes import JSONValue

T = TypeVar("T")
# A value parser: the value as read (anything), what it means (of the parser's own type), or Invalid.
Parser = Callable[[object], object]
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes '²' and '١٢', which int() refuses or reads


def interpolate(
    report: Report, path: Path, value: JSONValue, env: Mapping[str, str], unset: set[str] | None = None
) -> JSONValue:
    """Expand ``${VAR}`` in every string inside ``value``; errors are reported against their path.

    With ``unset`` given, an unset variable is not an error: it expands to "" and the
    dotted path of the value is added to ``unset`` (a disabled job may name them).
    """
    if isinstance(value, str):
        try:
            return expand(value, env)
        except Invalid as exc:
            if unset is not None and "is not set" in str(exc):
                unset.add(dotted(path))
                return expand(value, env, missing_ok=True)
            report.error(path, str(exc))
            report.reported.add(path)
            return value
    if isinstance(value, dict):
        return {k: interpolate(report, (*path, k), v, env, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(report, (*path, i), v, env, unset) for i, v in enumerate(value)]
    return value


def parse_fields(
    report: Report, path: Path, value: object, parsers: Mapping[str, Parser], required: str, example: str
) -> dict[str, Any] | None:
    """An action's mapping of options: known keys only, ``required`` present, each value parsed by its parser.
    None after any problem (all of them reported). The result is the keyword arguments of the action's dataclass:
    each value is what its own parser returned (``Any``: the dataclass's fields say which type each key has)."""
    spec = report.parse(path, value, as_mapping)
    if spec is None:
        return None
    before = len(report.problems)
    report.check_keys(path, spec, parsers)
    if required not in spec:
        report.error(path, f"missing '{required}': expected {required}: {example}")
        return None
    fields = {key: report.parse((*path, key), spec[key], parser) for key, parser in parsers.items() if key in spec}
    return None if len(report.problems) > before else fields


# ---- value parsers -------------------------------------------------------------------------


def show(value: object) -> str:
    """A found value as the user wrote it, in messages; a long one shortened (a message is one short line)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return quoted(value)
    text = str(value)
    if len(text) <= 60:
        return text
    return f"{text[:30]}... ({len(text):,} {'digits' if isinstance(value, int) else 'characters'})"


def as_str(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"expected text, got {show(value)}")
    return str(value)


def as_nonempty_str(value: object) -> str:
    text = as_str(value)
    if not text.strip():
        raise Invalid("expected a value, got an empty string")
    return text


def as_bool(value: object) -> bool:
    """YAML booleans, and the strings an interpolated ``${VAR:+true}`` can produce ('' is false)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise Invalid(f"expected true or false, got {show(value)}")


_BOOLS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
    "": False,
}


def as_int(low: int, high: int | None = None) -> Callable[[object], int]:
    """A whole number from ``low`` to ``high``: a YAML integer, or text of ASCII digits (from ``${VAR}``)."""
    bound = f"between {low} and {high}" if high is not None else f"at least {low}"

    def parse(value: object) -> int:
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            if len(value.strip()) > 18:  # far out of any bound, and int() refuses more than 4,300 digits
                raise Invalid(f"expected a number {bound}, got {show(value)}")
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {show(value)}")
        if value < low or (high is not None and value > high):
            raise Invalid(f"expected a number {bound}, got {show(value)}")
        return value

    return parse


def as_enum(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}, got {show(value)}")
        return str(value)

    return parse


def as_duration(value: object) -> timedelta:
    return _duration(value, allow_zero=False)


def as_duration_or_zero(value: object) -> timedelta:
    return _duration(value, allow_zero=True)


def _duration(value: object, allow_zero: bool) -> timedelta:
    if type(value) is str:  # most durations: text, and a schedule repeats a few (every: 5m, timeout: 30s)
        return _text_duration(value, allow_zero)
    return _checked_duration(value, allow_zero)


@functools.lru_cache(maxsize=1024)
def _text_duration(text: str, allow_zero: bool) -> timedelta:
    """A duration written as text (a plain str, not an Expanded one), cached: a timedelta is immutable, and a
    refused text is not cached (Invalid propagates), so its message is made again each time."""
    return _checked_duration(text, allow_zero)


def _checked_duration(value: object, allow_zero: bool) -> timedelta:
    """``parse_duration``, after refusing what it is not meant to see: other digits than ASCII ('１０m', '١٢m'),
    text longer than any duration (its digits would reach int()'s 4,300-digit limit), and inf or NaN."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
        if not text.isascii() or len(text) > 40 or (isinstance(value, float) and not math.isfinite(value)):
            raise Invalid(f"expected a duration like 30s, 10m or 1h30m, got {show(value)}")
    return parse_duration(value, allow_zero=allow_zero)


def as_zone(value: object) -> ZoneInfo:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected an IANA time zone like UTC or America/New_York, got {show(value)}")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder (America), a name too long for a file
        raise Invalid(f"unknown time zone {show(value)}; expected an IANA name like Europe/London") from None


def as_instant(zone: ZoneInfo) -> Callable[[object], datetime]:
    """ISO-8601 date or date-time; without an offset it is wall time in ``zone``."""

    def parse(value: object) -> datetime:
        if not isinstance(value, str):
            raise Invalid(f"expected an ISO-8601 time like 2026-12-31T23:00:00Z, got {show(value)}")
        try:
            instant = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"expected an ISO-8601 time like 2026-12-31T23:00:00Z, got {show(value)}") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=zone)
        # Slot math adds intervals to instants: keep them well inside the calendar (year 1 to 9999).
        if not datetime(1000, 1, 1, tzinfo=UTC) <= instant <= datetime(9000, 1, 1, tzinfo=UTC):
            raise Invalid(f"expected a time between the years 1000 and 9000, got {show(value)}")
        return instant.astimezone(UTC)

    return parse


def as_mapping(value: object) -> dict[str, JSONValue]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping (key: value lines), got {show(value)}")
    return value


def as_str_map(value: object) -> dict[str, str]:
    """A mapping of names to text (headers, env): numbers are accepted and turned to text."""
    mapping = as_mapping(value)
    out = {}
    for key, item in mapping.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise Invalid(f"expected text for '{key}', got {show(item)}")
        out[key] = str(item)
    return out


def as_list(value: object) -> list[JSONValue]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list, got {show(value)}")
    return value


def as_tuple(value: object) -> tuple[JSONValue, ...]:
    """A list (positional arguments), kept as a tuple."""
    return tuple(as_list(value))
