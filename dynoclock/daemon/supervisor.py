"""The supervisor: ``run`` (the clock) is a small parent process that keeps the scheduler process alive.

The parent starts the scheduler as a child (the same command line, ``sys.orig_argv``, with
``CLOCK_HEARTBEAT_FD`` set), forwards SIGTERM/SIGINT to it, and restarts it, with a growing pause (1 s doubling to
30 s), when it dies unexpectedly (exit 1, a signal) or stops writing its heartbeat (a line every quarter of the
timeout, 2.5 s, from a thread of its own) for ``CLOCK_HEARTBEAT_TIMEOUT`` seconds (10): a frozen process (stopped,
or C code holding the GIL) is killed with SIGKILL, then restarted. Each restart is logged as ``clock.restarted``
with the reason. A beat carries the instant it was written (``b<monotonic seconds>``; CLOCK_MONOTONIC is the
machine's, the same in both processes), so once the first one came the supervisor reads the pipe only at its
deadlines (the last beat plus the timeout: every 7.5-10 s) rather than at each beat: it wakes only for a signal
(SIGCHLD included) or a deadline, since an idle clock's CPU is counted in wake-ups.

The supervisor reads no schedule and imports next to nothing (it costs about one bare interpreter; ``python
clock.py`` decides to supervise before any other import, ``__main__.py``), and it starts the child with
``fork`` and ``exec`` itself (``Child``), as ``subprocess`` would, without its imports: the child
tells it its ``shutdown_grace`` in its first message on the heartbeat pipe (``g25.0``), then writes a line per
beat. Exit codes stay the child's: 0 after a clean stop, 2 for an invalid schedule (never restarted). A signal that
arrives before the child handles signals is forwarded once it does (its first heartbeat). The child dies with the
parent (a parent-death signal, Linux), so a SIGKILL to the parent ends both, as before. ``CLOCK_SUPERVISE=0``
runs the scheduler in the first process, with no supervisor.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

from dynoclock import signals

# What this module imports is what the supervisor process holds: the standard library's lightest modules only
# (subprocess, threading and typing would be 3 MB more). The child's part imports what it needs when it runs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType
    from typing import Protocol

    from dynoclock.observe.logs import EventLog
    from dynoclock.timesource import Clock

    class Monotonic(Protocol):
        def monotonic(self) -> float: ...


HEARTBEAT_FD = "CLOCK_HEARTBEAT_FD"  # set in the child: where it writes its heartbeat
PARENT_PID = "CLOCK_SUPERVISOR_PID"
HEARTBEAT_TIMEOUT = 10.0  # seconds without a heartbeat before the child is called frozen
FIRST_BEAT_TIMEOUT = 120.0  # the child's start-up (imports, the schedule) comes before its first heartbeat
DEFAULT_GRACE = 25.0  # shutdown_grace until the child has said its own
STOP_SLACK = 6.0  # after shutdown_grace: the child's own bounded exit (STOP_GRACE, flushes); then SIGKILL


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``run`` supervises: unless CLOCK_SUPERVISE=0, and not inside the supervised child itself."""
    env = os.environ if env is None else env
    return env.get("CLOCK_SUPERVISE", "1").strip().lower() not in ("0", "false", "no", "off") and (
        HEARTBEAT_FD not in env
    )


def supervised(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is the supervised scheduler."""
    return HEARTBEAT_FD in (os.environ if env is None else env)


def heartbeat_timeout(env: Mapping[str, str] | None = None) -> float:
    """Seconds without a heartbeat before the child is called frozen (``CLOCK_HEARTBEAT_TIMEOUT``, 10)."""
    return float((os.environ if env is None else env).get("CLOCK_HEARTBEAT_TIMEOUT") or HEARTBEAT_TIMEOUT)


def beat_every(timeout: float) -> float:
    """The child's heartbeat period: four beats per timeout, so a slow beat or two is never taken for a freeze."""
    return timeout / 4


def start_heartbeat(grace_s: float, clock: Clock | None = None) -> None:
    """In the child: die with the supervisor, tell it ``grace_s`` (the schedule's shutdown_grace), and write a
    heartbeat every ``beat_every`` seconds on a thread of its own."""
    import threading

    from dynoclock.timesource import SYSTEM

    sleep, monotonic = (clock or SYSTEM).sleep, (clock or SYSTEM).monotonic
    fd = int(os.environ[HEARTBEAT_FD])
    period = beat_every(heartbeat_timeout())
    os.set_inheritable(fd, False)  # no job's process may keep the pipe open
    die_with_parent(int(os.environ.get(PARENT_PID, "0")))
    with contextlib.suppress(OSError):
        os.write(fd, f"g{grace_s:g}\n".encode())

    def beat() -> None:
        while True:
            try:
                os.write(fd, b"b%.6f\n" % monotonic())
            except OSError:  # the supervisor is gone (and the parent-death signal is on its way)
                return
            sleep(period)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux's PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:  # it died before the call above
        os._exit(1)


class Supervisor:
    """Runs the scheduler child until a clean stop; see the module's doc."""

    def __init__(self, events: EventLog | None = None, clock: Monotonic | None = None):
        self._events = events  # the log (observe/logs.py, with the redaction it loads) is imported at a restart
        self.clock = clock or _MONOTONIC
        self.stop_bound = DEFAULT_GRACE + STOP_SLACK
        self.heartbeat_timeout = heartbeat_timeout()
        self.stopping_since: float | None = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.child: Child | None = None
        self.beating = False  # the child handles signals (it has written a heartbeat)
        self.forwarded = False
        self.first_signal: int = signal.SIGTERM  # forwarded as it came (SIGINT stays SIGINT)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hup)  # a reload of schedule.yaml: the scheduler child's
        signal.signal(signal.SIGCHLD, self._on_child)  # the child's exit wakes the loop at once
        for signum, at in [held for held in signals.held() if held[0] != signal.SIGHUP][:1]:
            self.stopping_since, self.first_signal = at, signum
        pause = 1.0
        while True:
            started = self.clock.monotonic()
            code, reason = self._one_child()
            if reason is None:
                return code
            if self.clock.monotonic() - started >= 60:
                pause = 1.0
            self._log().emit("clock.restarted", level="error", reason=reason, pause_s=pause)
            if self._sleep(pause):
                return 0  # a stop signal during the pause
            pause = min(pause * 2, 30.0)

    def _log(self) -> EventLog:
        if self._events is None:
            from dynoclock.observe.logs import log

            self._events = log
        return self._events

    def _one_child(self) -> tuple[int, str | None]:
        """Start the child and watch it; (exit code, None) to exit with, or (_, why) to restart it."""
        beat_r, beat_w = os.pipe()
        env = {**os.environ, HEARTBEAT_FD: str(beat_w), PARENT_PID: str(os.getpid())}
        try:
            self.child = Child.start([sys.executable, *sys.orig_argv[1:]], env, beat_w)
        finally:
            os.close(beat_w)
        self.beating = self.forwarded = False
        self._last_beat, self._partial = self.clock.monotonic(), b""
        os.set_blocking(beat_r, False)
        open_pipe, killed = True, False
        try:
            while True:
                # What the child wrote meanwhile, and its end first: a child that ended while the loop waited is
                # never taken for a frozen one.
                open_pipe = open_pipe and self._read_beats(beat_r)
                now = self.clock.monotonic()
                code = self.child.poll()
                if code is not None:
                    return self._ended(code)
                if self.stopping_since is not None and self.beating and not self.forwarded:
                    self._forward()
                deadlines = []
                if self.stopping_since is not None and not killed:
                    if now > self.stopping_since + self.stop_bound:
                        self.child.kill()  # it did not stop in time: exit before the platform's SIGKILL
                        killed = True
                    else:
                        deadlines.append(self.stopping_since + self.stop_bound)
                bound = self.heartbeat_timeout if self.beating else FIRST_BEAT_TIMEOUT
                if self.stopping_since is None:
                    if now - self._last_beat > bound:
                        self.child.kill()
                        self.child.wait()
                        return 1, f"no heartbeat for {bound:g} s: the scheduler process was frozen, killed"
                    deadlines.append(self._last_beat + bound)
                # Until a signal (SIGCHLD: the child ended) or the first deadline, just past it; with none (a killed
                # child not ended yet), a look each second. The pipe is watched only until the first beat (from it
                # on the child handles signals: one held is forwarded at once); later beats are read at the next
                # wake-up. Once the child closed its end of the pipe it is exiting: a look every 50 ms, so that its
                # end is seen even if SIGCHLD's wake-up is not (a child that exited 2 was once taken for frozen 10 s
                # later, and started again).
                wait = max(0.0, min(deadlines, default=now + 1.0) - now) + 0.01
                if not open_pipe:
                    wait = min(wait, 0.05)
                watched = [self.wake_r] if self.beating or not open_pipe else [beat_r, self.wake_r]
                ready, _, _ = select.select(watched, [], [], wait)
                if self.wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
        finally:
            os.close(beat_r)

    def _read_beats(self, beat_r: int) -> bool:
        """Read what the child wrote on the pipe (non-blocking); False once it closed its end (it is exiting)."""
        while True:
            try:
                data = os.read(beat_r, 4096)
            except BlockingIOError:
                return True
            if not data:
                return False
            self._heard(data)

    def _heard(self, data: bytes) -> None:
        """Messages from the child, a line each: ``g<seconds>`` is its shutdown_grace (and its first beat, taken as
        written when read), ``b<monotonic seconds>`` a beat written then."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line not ended yet waits for its end
        for line in lines:
            beat: float | None = None
            if line.startswith(b"g"):
                beat = self.clock.monotonic()  # the first message: the child handles signals from now on
                with contextlib.suppress(ValueError):
                    self.stop_bound = float(line[1:]) + STOP_SLACK
            elif line.startswith(b"b"):
                with contextlib.suppress(ValueError):
                    beat = min(float(line[1:]), self.clock.monotonic())
            if beat is not None:
                self.beating, self._last_beat = True, max(self._last_beat, beat)

    def _ended(self, code: int) -> tuple[int, str | None]:
        if self.stopping_since is not None:  # stopped by our signal (perhaps before it could handle it)
            return (0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else max(code, 1)), None
        if code in (0, 2):  # a clean stop (a signal sent to it directly), or an invalid schedule: never restarted
            return code, None
        if code < 0:
            with contextlib.suppress(ValueError):
                return code, f"the scheduler process was killed by {signal.Signals(-code).name}"
        return code, f"the scheduler process exited with {code}"

    def _forward(self) -> None:
        assert self.child is not None
        self.forwarded = True
        self.child.send_signal(self.first_signal)

    def _on_child(self, signum: int, frame: FrameType | None) -> None:
        self._wake(b"c")

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP reloads schedule.yaml in the scheduler child (daemon/reload.py); one before the child handles
        signals is not needed: the child reads the file as it starts."""
        if self.child is not None and self.beating:
            self.child.send_signal(signal.SIGHUP)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping_since is None:
            self.stopping_since, self.first_signal = self.clock.monotonic(), signum
        elif self.child is not None and self.beating:
            self.child.send_signal(signum)  # a second signal: the child logs it, as it did unsupervised
        self._wake(b"!")

    def _wake(self, why: bytes) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the loop has a wake-up to read already
            os.write(self.wake_w, why)

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``, or until a stop signal; whether one came."""
        end = self.clock.monotonic() + seconds
        while self.stopping_since is None and self.clock.monotonic() < end:
            select.select([self.wake_r], [], [], max(0.0, end - self.clock.monotonic()))
        return self.stopping_since is not None


class _Monotonic:
    """The supervisor's time: it only measures intervals (timesource.SYSTEM imports datetime and threading)."""

    monotonic = staticmethod(time.monotonic)


_MONOTONIC = _Monotonic()


class Child:
    """The scheduler process, started as ``subprocess.Popen(argv, env=env, pass_fds=(fd,))`` would (every other
    descriptor closed, signals the supervisor ignores back to their defaults), with the few calls of Popen's the
    supervisor makes: Popen's module and its imports were a quarter of the supervisor's memory."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None  # as Popen's: the exit code, or -N after signal N

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], keep_fd: int) -> Child:
        pid = os.fork()
        if pid == 0:  # the child: nothing here may return into the supervisor's code
            try:
                os.closerange(3, keep_fd)
                os.closerange(keep_fd + 1, _max_fd())
                os.set_inheritable(keep_fd, True)
                for signum in _RESTORED:
                    signal.signal(signum, signal.SIG_DFL)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)  # exec failed
        return cls(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is not None:  # reaped: its pid may be another process's now
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# Ignored by Python at start: Popen's restore_signals gives them back their default actions in the child.
_RESTORED = [getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)]


def _max_fd() -> int:
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 256)
    except (OSError, ValueError):
        return 256
