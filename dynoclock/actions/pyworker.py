"""The worker process of ``isolate: process`` Python jobs: its own side of the protocol (the clock's side is
run/isolation.py).

Started by the clock as ``python -c BOOT FD SYS_PATH MAX_MEMORY APP`` in a process group of its own. It makes the
``app`` (``package:create_app``) and pushes its app context once, then answers calls on the socket ``FD``, one
JSON line each way: ``{"target", "args", "kwargs", "run": {...}}`` in; ``{"output": [stream, line]}`` lines while
it runs, then ``{"detail": ...}`` or ``{"error": ..., "timeout": bool}`` out. After each call it kills every other
process of its group (what the job forked or left running), so nothing the job started outlives its run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from dynoclock.jsontypes import JSONValue

# What the clock runs: sys.path is the clock's own (its app's modules import the same way), then this module.
BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
    "from dynoclock.actions.pyworker import main; main(int(sys.argv[1]), sys.argv[3], sys.argv[4])"
)
PR_SET_PDEATHSIG = 1


class RunFields(TypedDict):
    """The run a call is for, as the worker rebuilds its ``RunContext``."""

    job: str
    scheduled_for: str  # ISO 8601
    run_id: str
    attempt: int
    timeout: float  # seconds
    remaining: float  # seconds


class Request(TypedDict):
    """One call, clock to worker: ``target(*args, **kwargs)`` for ``run``."""

    target: str
    args: list[JSONValue]
    kwargs: dict[str, JSONValue]
    run: RunFields


class Reply(TypedDict, total=False):
    """One message, worker to clock: ready (or the app's error), a line of output, or a call's end."""

    ready: bool
    output: list[str]  # [stream, line]
    error: str
    timeout: bool
    recycle: bool
    detail: str


def main(fd: int, max_memory: str, app: str) -> None:
    """The worker's life: set up, then one call after another until the clock closes the socket or dies."""
    me = os.getpid()
    parent = os.getppid()
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the clock's to handle; it stops its workers
    sock = socket.socket(fileno=fd)
    # A fork inside a job must not answer calls, and must die with this worker.
    os.register_at_fork(after_in_child=lambda: _forked_child(sock, me))
    if max_memory:
        import resource

        limit = int(max_memory)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    reader = sock.makefile("rb")
    try:
        if app:
            _start_app(app)
    except BaseException as exc:  # the factory's own error, reported to the clock
        _send(sock, {"error": _error_text(exc)})
        return
    _send(sock, {"ready": True})
    for line in reader:
        request = json.loads(line)
        reply = _call(sock, request)
        if os.getpid() != me:  # a forked copy of this worker came back from the job: it must not go on
            os._exit(0)
        _kill_strays(me)
        _send(sock, reply)


def _call(sock: socket.socket, request: Request) -> Reply:
    from dynoclock.actions.base import JobFailed, JobTimeout, RunContext
    from dynoclock.actions.python import resolve, takes_run
    from dynoclock.timesource import SYSTEM

    run = request["run"]
    try:
        func = resolve(request["target"])
        kwargs = dict(request["kwargs"])
        if takes_run(request["target"], func):
            kwargs["run"] = RunContext(
                run["job"], datetime.fromisoformat(run["scheduled_for"]), run["run_id"], run["attempt"],
                timedelta(seconds=run["timeout"]), deadline=SYSTEM.monotonic() + max(run["remaining"], 0.001),
                output=lambda stream, text: _send(sock, {"output": [stream, text]}),
            )  # fmt: skip
        result = func(*request["args"], **kwargs)
    except JobTimeout as exc:
        return {"error": str(exc), "timeout": True}
    except JobFailed as exc:
        return {"error": str(exc)}
    except BaseException as exc:  # the job's own bug (sys.exit too) fails its run only
        return {"error": _error_text(exc), "recycle": isinstance(exc, MemoryError)}
    return {"detail": "" if result is None else str(result)}


def _start_app(factory: str) -> None:
    """Make the app and enter its context, once for this worker's life."""
    from dynoclock.actions.python import flask_app

    flask_app(factory).app_context().__enter__()


def _error_text(exc: BaseException) -> str:
    from dynoclock.actions.base import JobFailed

    return str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}"


def _send(sock: socket.socket, message: Reply) -> None:
    sock.sendall(json.dumps(message, default=str).encode() + b"\n")


def _forked_child(sock: socket.socket, worker: int) -> None:
    with contextlib.suppress(OSError):
        sock.close()
    _die_with_parent(worker)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux): a worker never outlives the clock, however the clock ends."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _kill_strays(me: int) -> None:
    """SIGKILL every other process of this worker's group (a job's fork, a server it left running), and reap
    those that were its children. Linux: read from /proc; elsewhere nothing is done between runs."""
    if not os.path.isdir("/proc/self"):
        return
    strays, children = [], []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == me:  # state, ppid, pgrp
            strays.append(int(name))
            if int(fields[1]) == me:
                children.append(int(name))
    for pid in strays:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
