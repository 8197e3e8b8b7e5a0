"""One line per event on stdout: logfmt by default, JSON lines with ``LOG_FORMAT=json``.

Every value passes through the redactor first, so secrets (values of
``*TOKEN*``/``*SECRET*``/``*PASSWORD*``/``*KEY*`` variables, ``sign:`` keys,
Authorization headers, passwords in URLs) never reach the log.

With ``CLOCK_LOG=logging`` (or ``use_logging()``, or ``EventLog(to="logging")``) events go to the stdlib
``logging`` logger ``dynoclock`` instead (``both``: to stdout and to it): the line is the message, the level
maps to INFO/WARNING/ERROR, and the fields are on the record (``record.dynoclock``, and each as an attribute
when its name is free).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from dynoclock import quiet
from dynoclock.observe.redact import redact
from dynoclock.observe.timefmt import iso_utc
from dynoclock.timesource import SYSTEM, Clock

_bareword = re.compile(r"[A-Za-z0-9_./:@+-]+").fullmatch
LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
DESTINATIONS = ("stdout", "logging", "both")
logger = logging.getLogger("dynoclock")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
Entry = tuple[str, str, dict[str, object]]  # the line, its level, its fields
Emitted = tuple[datetime, str, str, dict[str, Any]]  # when, the event, its level, its fields as given


class EventLog:
    """Writes events; thread-safe, one flushed line per event."""

    def __init__(
        self, stream: TextIO | None = None, fmt: str | None = None, clock: Clock = SYSTEM, to: str | None = None
    ):
        self.stream = stream
        to = (to or os.environ.get("CLOCK_LOG") or "stdout").lower()
        self.to = to if to in DESTINATIONS else "stdout"  # where events go: stdout, logging, both
        self.clock = clock  # stamps each line (ts=), and bounds flush()
        self.fmt = (fmt or os.environ.get("LOG_FORMAT", "logfmt")).lower()
        # Reentrant: a signal handler (a second SIGTERM) may log while the main thread it interrupted
        # holds the lock mid-line; a plain Lock would deadlock the clock there, until SIGKILL.
        self._lock = threading.RLock()
        self._pending: deque[Emitted] | None = None  # set by write_behind(): events waiting for the writer thread
        self._idle = False  # the writer thread waits for the next event
        self._writing = False
        self._cond = threading.Condition(self._lock)

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        at = self.clock.now()
        pending = self._pending
        if pending is not None:  # the writer thread formats it (redaction included) with the others
            pending.append((at, event, level, fields))  # atomic: no lock on the runs' path
            if self._idle:  # set before the writer looks at an empty queue: a line is never left waiting
                with self._lock:
                    self._cond.notify_all()  # flush() may wait on it too
            return
        with self._lock:
            self._write([self._entry((at, event, level, fields))])

    def _entry(self, emitted: Emitted) -> Entry:
        """An event's line, its level and its fields, every value redacted."""
        at, event, level, fields = emitted
        record: dict[str, object] = {"ts": iso_utc(at, timespec="milliseconds"), "level": level, "event": event}
        for key, value in fields.items():
            if value is None:
                continue
            if isinstance(value, datetime):
                value = iso_utc(value)
            elif isinstance(value, str):
                value = redact(value)
            record[key] = value
        line = json.dumps(record, default=str) if self.fmt == "json" else logfmt(record)
        return line, level, record

    def write_behind(self) -> None:
        """From now on, lines are formatted and written by a thread of their own, as many per write as are waiting:
        in a burst of 1,000 runs, 2,000 lines formatted and flushed on the workers' path cost more than the runs
        (an event's values are read when its line is written: they are immutable, or no longer changed)."""
        with self._lock:
            if self._pending is None:
                self._pending = deque()
                threading.Thread(target=self._writer, name="log-writer", daemon=True).start()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until the lines emitted so far are written."""
        end = self.clock.monotonic() + timeout
        with self._lock:
            while (self._pending or self._writing) and self.clock.monotonic() < end:
                self._cond.wait(0.01)

    def _writer(self) -> None:
        pending = self._pending
        assert pending is not None
        while True:
            with self._lock:
                self._idle = True
                while not pending:
                    self._cond.wait()
                self._idle = False
                self._writing = True
            quiet.wait_for_quiet()  # runs starting first (dynoclock/quiet.py); their lines gather meanwhile
            emitted = [pending.popleft() for _ in range(len(pending))]
            entries = []
            for one in emitted:
                try:
                    entries.append(self._entry(one))
                except Exception:  # a value whose str() raises: its line is lost, never the writer
                    continue
            if entries:
                self._write(entries)
            with self._lock:
                self._writing = False
                self._cond.notify_all()

    def _write(self, entries: list[Entry]) -> None:
        if self.to != "stdout":
            for line, level, record in entries:
                to_logging(line, level, record)
            if self.to == "logging" and logger.hasHandlers():  # with no handler anywhere, stdout: never lost
                return
        stream = self.stream or sys.stdout
        try:
            stream.write("\n".join(line for line, _, _ in entries) + "\n")
            stream.flush()
        except (OSError, ValueError):  # stdout closed or its reader gone: logging must not stop the clock
            pass


def to_logging(line: str, level: str, record: Mapping[str, object]) -> None:
    """One event to the ``dynoclock`` logger: a handler's failure is logging's business (it reports it on stderr)."""
    number = LEVELS.get(level, logging.ERROR)
    if logger.isEnabledFor(number):
        extra = {key: value for key, value in record.items() if key not in _RESERVED}
        logger.log(number, "%s", line, extra={**extra, "dynoclock": dict(record)})


def use_logging(also_stdout: bool = False, events: EventLog | None = None) -> None:
    """Send the events of this process (``log``, or ``events``) to the ``dynoclock`` logger from now on."""
    (events or log).to = "both" if also_stdout else "logging"


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, bounded: for log lines about infrastructure errors."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]


def logfmt(record: Mapping[str, object]) -> str:
    parts = []
    for key, value in record.items():
        kind = type(value)
        if kind is str:
            text = str(value)
        elif kind is int:  # digits and a sign: never quoted
            parts.append(f"{key}={value}")
            continue
        elif kind is bool:
            text = "true" if value else "false"
        elif kind is float:
            text = f"{value:.1f}"
        else:
            text = str(value)
        if not _bareword(text):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


log = EventLog()


def clip(text: str, limit: int = 2000) -> str:
    """A long value (a job's error, its detail) cut to ``limit`` characters for one log line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
