"""Real parts for the runtime tests: a captured event log, a loopback HTTP server, a real clock process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dynoclock.config.loader import Schedule, load_schedule
from dynoclock.observe.logs import EventLog
from dynoclock.run.outcome import Outcome
from dynoclock.run.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# ---- the event log, captured --------------------------------------------------------------


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


# ---- a loopback HTTP server ---------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Loopback:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) whose paths behave as named:

    ``/ok`` 200, ``/status/N`` status N, ``/echo500`` 500 echoing headers and body, ``/hang`` never
    answers (until the server stops), ``/reset`` resets the connection, ``/redirect`` 302 to ``/ok``.
    Every request is recorded first.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.released = threading.Event()  # set at stop: hanging handlers return
        self.hanging = threading.Event()  # set when a /hang request arrived
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.requests.append(Request(self.command, self.path, dict(self.headers.items()), body))
                route = self.path.split("?", 1)[0]
                if route == "/hang":
                    owner.hanging.set()
                    owner.released.wait(60)
                    self.close_connection = True
                    return
                if route == "/reset":
                    # SO_LINGER 0 then close: the client gets a TCP RST, not a response.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if route == "/redirect":
                    self._send(302, b"", {"Location": "/ok"})
                elif route == "/echo500":
                    # What a careless app's error page shows: the credentials first, then all the rest.
                    echo = json.dumps(
                        {"authorization": self.headers.get("Authorization"), "body": body.decode(),
                         "headers": dict(self.headers.items())}
                    ).encode()  # fmt: skip
                    self._send(500, echo)
                elif route.startswith("/status/"):
                    self._send(int(route.rsplit("/", 1)[1]), b"as asked")
                else:
                    self._send(200, b"ok")

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def finish(self) -> None:
                with contextlib.suppress(OSError):  # the /reset socket is gone
                    super().finish()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="loopback-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Loopback:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


# ---- a real clock process -----------------------------------------------------------------


class ClockProcess:
    """``python clock.py -c FILE`` as a real process; stdout and stderr go to one log file we read."""

    def __init__(self, schedule: Path, log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCK_")}
        full_env.update(env or {})
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "clock.py", "-c", str(schedule)],
                cwd=ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20) -> list[str]:
        """Wait until ``count`` log lines match the regex ``pattern``; return them."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if regex.search(line)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {count} lines matching {pattern!r} (exit={self.proc.poll()}):\n{self.text}")
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 35) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Teardown only: the test failed and left the process running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def logfmt_fields(line: str) -> dict[str, str]:
    """Parse one logfmt line (bare words and JSON-quoted strings)."""
    fields = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        value = m.group(2)
        fields[m.group(1)] = json.loads(value) if value.startswith('"') else value
    return fields


def events_in(lines: list[str], event: str, **match: str) -> Iterator[dict[str, str]]:
    """The logfmt lines of one event (with matching fields), parsed."""
    for line in lines:
        fields = logfmt_fields(line)
        if fields.get("event") == event and all(fields.get(k) == v for k, v in match.items()):
            yield fields
