"""Real HTTP servers on 127.0.0.1 for the tests: a Recorder (what pings, webhooks and Sentry sent, in order,
with arrival times) and a Loopback (paths that succeed, fail, hang, reset or redirect), with its fixture."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

# ---- a recording server ---------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        """The body as text, gunzipped when it came compressed (Sentry's envelopes may)."""
        body = self.body
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that exits with its keep-alive connection open resets it: not news


class Recorder:
    """A ThreadingHTTPServer on 127.0.0.1, port 0, answering 200 (or ``status``) to everything.

    ``hang=True``: record the request, then never answer (until ``stop``), as a stuck monitoring service.
    ``first``: statuses for the first requests, in order (``[503]``: a flaky service, then ``status``).
    """

    def __init__(self, hang: bool = False, status: int = 200, first: list[int] | None = None) -> None:
        self.received: list[Received] = []
        self.hang = hang
        self.status = status
        self.first = list(first or [])
        self.released = threading.Event()
        self._changed = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                status = owner._record(
                    Received(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                             dict(self.headers.items()), body, time.monotonic())
                )  # fmt: skip
                if owner.hang:
                    owner.released.wait(60)
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = do_HEAD = _handle

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def _record(self, request: Received) -> int:
        """Keep the request; the status to answer with."""
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()
            return self.first.pop(0) if self.first else self.status

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def wait_for(
        self, count: int, timeout: float = 10, where: Callable[[Received], bool] = lambda r: True
    ) -> list[Received]:
        """Wait until ``count`` requests matching ``where`` arrived; return them all (may be more)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.received if where(r)]
                if len(found) >= count or time.monotonic() > deadline:
                    return found
                self._changed.wait(max(0.0, deadline - time.monotonic()))

    def start(self) -> Recorder:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def recording(hang: bool = False, status: int = 200, first: list[int] | None = None) -> Iterator[Recorder]:
    server = Recorder(hang=hang, status=status, first=first).start()
    try:
        yield server
    finally:
        server.stop()


# ---- a server whose paths behave as named ------------------------------------------------------


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


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    """A Loopback server, stopped at teardown."""
    server = Loopback().start()
    yield server
    server.stop()
