"""``isolate: process``: Python jobs run in worker processes, which the clock can kill.

A job in the clock's own thread can take the clock down with it (``os._exit``, a segfault, a fork that keeps the
lease, an allocation that gets the process OOM-killed) or freeze it (C code that holds the GIL stops timeouts,
other jobs, signals and the lease). In a worker process it can do none of that: at the timeout (or a shutdown,
or ``overlap: replace``) the worker's process group gets SIGTERM, then SIGKILL after ``KILL_AFTER``; a worker
that dies fails only its run; either way a fresh worker is started for later runs.

Workers are plain ``python`` subprocesses speaking JSON lines over a socket (dynoclock/actions/pyworker.py), not
``multiprocessing``: each is started in a process group of its own (so a job's forks are killed with it), with a
parent-death signal, and nothing else (no forkserver or resource-tracker process to stop, no pickling of the
app's objects). They are pooled by (app factory, max_memory): the app is made once per worker, any job with the
same factory may use it. Each is started from one long-lived thread (``pyworker-spawner``), because Linux sends
the parent-death signal when the *thread* that started a process ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynoclock.actions.base import JobFailed, JobTimeout, RunContext
from dynoclock.actions.pyworker import BOOT
from dynoclock.observe.timefmt import iso_utc
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from dynoclock.actions.pyworker import Reply, Request, RunFields
    from dynoclock.jsontypes import JSONValue

KILL_AFTER = 1.0  # seconds between SIGTERM and SIGKILL to a worker's group (under the watchdog's 1.5 s)
IDLE_KEEP = 2  # idle workers kept per (app, max_memory); more are stopped when their run ends

Key = tuple[str, int]  # (app factory or "", max_memory in bytes or 0)


class WorkerDied(JobFailed):
    """The worker process ended during a run: ``worker process died: exit 3`` / ``killed by SIGSEGV``."""


@dataclass(eq=False)
class Worker:
    """One worker process and the clock's end of its socket."""

    key: Key
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    buffer: bytes = b""
    stopped: bool = False
    serving: str | None = None  # the run id of the call under way
    ended: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    end_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def receive(self, until: float, clock: Clock) -> Reply | None:
        """The next message, waiting until ``until`` (monotonic) at most; None when the time is up. Raises
        WorkerDied once the socket closes (the worker ended)."""
        while b"\n" not in self.buffer:
            wait = until - clock.monotonic()
            if wait <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise WorkerDied(f"worker process died: {self.end()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: Reply = json.loads(line)
        return message

    def send(self, message: Request) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            raise WorkerDied(f"worker process died: {self.end()}") from None

    def stop_run(self, run_id: str, clock: Clock = SYSTEM) -> None:
        """A run was cancelled: terminate the worker if it still serves that run."""
        with self.lock:
            if self.serving != run_id:
                return
        self.terminate(clock)

    def terminate(self, clock: Clock = SYSTEM) -> None:
        """SIGTERM to the worker's group, SIGKILL ``KILL_AFTER`` later if the worker is still there (what it
        forked goes with it). Safe to call from any thread, more than once."""
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILL_AFTER)
        self.end()

    def end(self) -> str:
        """Kill what is left of the worker's group, reap the worker; how it ended (``exit 3``, ``killed by
        SIGSEGV``)."""
        with self.end_lock:
            if self.ended is None:
                self.stopped = True
                self._signal_group(signal.SIGKILL)  # before the reap: the group id is the worker's while it lives
                code = self.proc.wait()
                with contextlib.suppress(OSError):
                    self.sock.close()
                self.ended = f"exit {code}"
                if code < 0:
                    try:
                        self.ended = f"killed by {signal.Signals(-code).name}"
                    except ValueError:
                        self.ended = f"killed by signal {-code}"
            return self.ended

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)


class WorkerPool:
    """The clock's worker processes, keyed by (app factory, max_memory); started lazily, kept idle for reuse."""

    def __init__(self, clock: Clock = SYSTEM):
        self.clock = clock
        self._idle: dict[Key, list[Worker]] = {}
        self._busy: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._spawns: list[tuple[Key, Future[Worker]]] = []
        self._wake = threading.Condition(self._lock)
        self._spawner: threading.Thread | None = None

    def call(
        self, key: Key, target: str, args: tuple[JSONValue, ...], kwargs: dict[str, JSONValue], ctx: RunContext
    ) -> str:
        """Run ``target(*args, **kwargs)`` in a worker for ``key``; its detail, or JobFailed / JobTimeout."""
        worker = self._acquire(key, ctx)
        with worker.lock:
            worker.serving = ctx.run_id
        ctx.on_cancel(lambda: worker.stop_run(ctx.run_id, self.clock))
        run: RunFields = {"job": ctx.job, "scheduled_for": iso_utc(ctx.scheduled_for), "run_id": ctx.run_id,
               "attempt": ctx.attempt, "timeout": ctx.timeout.total_seconds(), "remaining": ctx.remaining}  # fmt: skip
        request: Request = {"target": target, "args": list(args), "kwargs": kwargs, "run": run}
        try:
            worker.send(request)
            while True:
                message = worker.receive(ctx.deadline, self.clock)
                if message is None:  # the deadline: the watchdog's cancel is due now; stop it here as well
                    worker.terminate(self.clock)
                    raise JobTimeout(ctx.timeout)
                if "output" in message:
                    stream, line = message["output"]
                    ctx.output(str(stream), str(line))
                    continue
                break
        except BaseException:  # died, timed out, or the watchdog's RunCancelled landed here
            self._discard(worker)
            raise
        if "error" in message:
            self._release(worker, keep=not message.get("recycle"))
            raise (JobTimeout(ctx.timeout) if message.get("timeout") else JobFailed(str(message["error"])))
        self._release(worker)
        return str(message.get("detail", ""))

    def prestart(self, keys: set[Key]) -> None:
        """Start one worker per key in the background (at the clock's start), so first runs find one ready."""
        for key in keys:
            self._start_replacement(key)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in (*self._busy, *(w for ws in self._idle.values() for w in ws))]

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every worker (at the clock's exit): idle ones at once, busy ones after their runs were stopped."""
        with self._lock:
            self._closed = True
            workers = [*self._busy, *(w for ws in self._idle.values() for w in ws)]
            self._idle.clear()
            self._wake.notify_all()
        threads = [threading.Thread(target=w.terminate, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        end = self.clock.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - self.clock.monotonic()))

    # ---- workers ---------------------------------------------------------------------------

    def _acquire(self, key: Key, ctx: RunContext) -> Worker:
        with self._lock:
            if self._closed:
                raise JobFailed("the clock is stopping")
            idle = self._idle.get(key, [])
            while idle:
                worker = idle.pop()
                if worker.proc.poll() is None:
                    self._busy.add(worker)
                    return worker
                worker.end()
        worker = self._start(key, ctx.deadline)
        with self._lock:
            self._busy.add(worker)
        return worker

    def _release(self, worker: Worker, keep: bool = True) -> None:
        with worker.lock:
            worker.serving = None
        with self._lock:
            self._busy.discard(worker)
            idle = self._idle.setdefault(worker.key, [])
            if keep and not self._closed and not worker.stopped and len(idle) < IDLE_KEEP:
                idle.append(worker)
                return
        worker.terminate(self.clock)

    def _discard(self, worker: Worker) -> None:
        """A worker that died or was killed: make sure it is gone, and start a fresh one for later runs."""
        with self._lock:
            self._busy.discard(worker)
        worker.terminate(self.clock)
        self._start_replacement(worker.key)

    def _start_replacement(self, key: Key) -> None:
        def replace() -> None:
            with contextlib.suppress(Exception):
                worker = self._start(key, self.clock.monotonic() + 60)
                self._release(worker)

        threading.Thread(target=replace, name="pyworker-start", daemon=True).start()

    def _start(self, key: Key, until: float) -> Worker:
        """A new worker for ``key``, ready for calls (its app made); JobFailed if it cannot start, JobTimeout if
        it is not ready by ``until``."""
        future: Future[Worker] = Future()
        with self._lock:
            if self._closed:
                raise JobFailed("the clock is stopping")
            self._spawns.append((key, future))
            if self._spawner is None:
                self._spawner = threading.Thread(target=self._spawn_loop, name="pyworker-spawner", daemon=True)
                self._spawner.start()
            self._wake.notify_all()
        worker = future.result()
        try:
            message = worker.receive(until, self.clock)
        except WorkerDied as exc:
            raise WorkerDied(f"worker process did not start: {str(exc).split(': ', 1)[1]}") from None
        if message is None or "error" in message:
            worker.terminate(self.clock)
            if message is None:
                raise JobFailed("worker process not ready in time (importing the app?)")
            raise JobFailed(f"app={key[0]}: {message['error']}")
        with self._lock:
            closed = self._closed
        if closed:
            worker.terminate(self.clock)
            raise JobFailed("the clock is stopping")
        return worker

    def _spawn_loop(self) -> None:
        """Starts every worker process, for the thread-bound parent-death signal (see the module's doc)."""
        while True:
            with self._lock:
                while not self._spawns:
                    self._wake.wait()
                key, future = self._spawns.pop(0)
            try:
                future.set_result(_spawn(key))
            except BaseException as exc:  # handed to the run that asked
                future.set_exception(JobFailed(f"cannot start a worker process: {exc}"))


def _spawn(key: Key) -> Worker:
    app, max_memory = key
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(theirs.fileno()), json.dumps(sys.path), str(max_memory or ""), app],
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            process_group=0,
        )
    finally:
        theirs.close()
    return Worker(key, proc, ours)


POOL = WorkerPool()  # one per process, like the hook threads
