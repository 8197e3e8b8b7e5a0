"""``command:`` jobs: run one of the app's commands (``flask scheduled``) as a subprocess."""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynoclock.actions.base import JobFailed, RunContext, shared
from dynoclock.actions.shellvars import shell_script
from dynoclock.config.envvars import Expanded
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_bool, as_nonempty_str, as_str_map, show
from dynoclock.timesource import Clock

JOB_KEYS: tuple[str, ...] = ("shell", "env", "cwd")
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when a command must stop
AFTER_EXIT = 1.0  # seconds its pipes are still read after the command exits (a background child may hold them)
MAX_LINES = 1000  # output lines logged per run; the rest are counted, not logged
MAX_LINE = 2000  # bytes kept of one output line; the rest of the line is counted, not kept
CHUNK = 65536  # bytes read from a pipe at a time
POLL = 0.05  # seconds between checks whether the command exited, where the system has no pidfd


@dataclass(frozen=True, slots=True)
class CommandAction:
    argv: tuple[str, ...]  # with shell: a single item, the shell script
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # the script's ${...} values, passed as variables

    def run(self, ctx: RunContext) -> str:
        """Run the command in its own process group; its output goes to the log line by line. When it exits (or
        is stopped), whatever it left running in its group is killed and the pipes closed: nothing outlives a run."""
        env = {**os.environ, **self.env, **self.values, **ctx.env()}
        argv: list[str] = ["/bin/sh", "-c", self.argv[0]] if self.shell else list(self.argv)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own group: we can stop its children too, and Ctrl-C reaches us only
            )
        except OSError as exc:
            raise JobFailed(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        group = _Group(proc)
        ctx.on_cancel(lambda: _stop(group, ctx.clock))
        out = _Output(ctx)
        try:
            _collect(proc, out, ctx)
        finally:
            group.end()
        out.finish()
        code = proc.returncode
        if code != 0:
            what = f"signal={signal.Signals(-code).name}" if code < 0 else f"exit={code}"
            last = f": {out.last}" if out.last else ""
            raise JobFailed(f"{what}{last}")
        return "exit=0"

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        """The program must be there (on PATH, or executable at its path) and ``cwd`` a directory.
        A shell script is not looked into."""
        if self.shell:
            return None
        program = self.argv[0]
        if os.sep in program:
            if not os.access(os.path.join(self.cwd or ".", program), os.X_OK):
                return f"{program!r} is not an executable file"
        elif _which(program, self.env.get("PATH", os.environ.get("PATH", ""))) is None:
            if program in _SHELL_ONLY:
                return f"{program!r} is not on PATH: it is shell syntax; add 'shell: true' to run the line with sh"
            return f"{program!r} is not on PATH"
        if self.cwd and not os.path.isdir(self.cwd):
            return f"cwd {self.cwd!r} is not a directory"
        return None


# Words that only a shell understands: a command line starting with one needs `shell: true`.
_SHELL_ONLY = frozenset(
    {"exit", "cd", "export", "source", ".", "set", "unset", "alias", "eval", "exec", "if", "for", "while", "case"}
    | {"until", "function", "return", "shift", "trap", "ulimit", "umask", "wait"}
)


def parse(report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> CommandAction | None:
    before = len(report.problems)
    opts: dict[str, Any] = {}  # CommandAction's keyword arguments, each of its parser's type
    for key, parser in (("shell", as_bool), ("env", as_str_map), ("cwd", as_nonempty_str)):
        if key in extras:
            raw, where = extras[key]
            opts[key] = report.parse(where, raw, parser)
    shell = bool(opts.get("shell"))
    command = report.parse(path, value, lambda v: as_command(v, shell))
    if command is None or len(report.problems) > before:
        return None
    argv, values = command
    if values or opts.get("env"):
        return CommandAction(argv, values=values, **opts)
    action: CommandAction = shared(_plain_command, argv, shell, opts.get("cwd"))  # no per-job dict: one for all
    return action


def _plain_command(argv: tuple[str, ...], shell: bool, cwd: str | None) -> CommandAction:
    return CommandAction(argv, shell=shell, cwd=cwd)


def as_command(value: object, shell: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """The argv, and the variables that carry a shell script's ``${...}`` values (actions/shellvars.py).
    A list is the argv as is; a string is split like a shell would, or given to ``sh -c`` with shell: true."""
    if isinstance(value, list):
        if not value:
            raise Invalid("expected a command like [flask, scheduled], got an empty list")
        if shell:
            raise Invalid("with shell: true, write the command as one string")
        for item in value:
            if isinstance(item, (dict, list)) or item is None:
                raise Invalid(f"expected each argument as text, got {show(item)}")
            if isinstance(item, bool):  # YAML reads [true] or [yes] as a boolean
                raise Invalid(f"an argument was read as the YAML boolean {item}; quote it, e.g. ['true']")
        return tuple(str(item) for item in value), {}
    text = as_nonempty_str(value)
    if shell:
        if isinstance(value, Expanded):
            script, values = shell_script(value.pieces, value.refs)
            return (script,), values
        return (text,), {}
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise Invalid(f"cannot split {text!r} into arguments: {exc}") from None
    return tuple(argv), {}


@functools.lru_cache(maxsize=4096)
def _which(program: str, path: str) -> str | None:
    """shutil.which, once per (program, PATH): a schedule may name the same program thousands of times."""
    return shutil.which(program, path=path)


def _collect(proc: subprocess.Popen[bytes], out: _Output, ctx: RunContext) -> None:
    """Log the command's output until it has exited and closed its pipes, or until AFTER_EXIT after its exit
    (a background process it started may hold the pipes open for ever), but never past the run's timeout, and
    not at all once the run was cancelled."""
    clock = ctx.clock
    pipes = {pipe.fileno(): name for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")) if pipe}
    exit_fd = _exit_fd(proc)
    until: float | None = None  # once the command has exited: when to stop reading
    with selectors.DefaultSelector() as selector:
        for fd, name in pipes.items():
            selector.register(fd, selectors.EVENT_READ, name)
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ)
        try:
            while until is None or (pipes and clock.monotonic() < until):
                left = None if until is None else max(0.0, until - clock.monotonic())
                wait = left if exit_fd is not None else min(POLL if left is None else left, POLL)
                ready = selector.select(wait)
                if not ready and left is not None and wait == left:
                    break  # AFTER_EXIT is over
                for key, _ in ready:
                    if key.fd == exit_fd:
                        selector.unregister(exit_fd)
                    elif data := os.read(key.fd, CHUNK):
                        out.feed(key.data, data)
                    else:
                        selector.unregister(key.fd)
                        out.close(pipes.pop(key.fd))
                if until is None and (
                    any(key.fd == exit_fd for key, _ in ready) if exit_fd is not None else proc.poll() is not None
                ):
                    until = clock.monotonic() + (0.0 if ctx.cancelled.is_set() else min(AFTER_EXIT, ctx.remaining))
        finally:
            if exit_fd is not None:
                os.close(exit_fd)


def _exit_fd(proc: subprocess.Popen[bytes]) -> int | None:
    """A descriptor that becomes readable when the command exits, without reaping it (a Linux pidfd); None
    where the system has none (then POLL)."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


class _Output:
    """The command's output as log lines: each line at most MAX_LINE bytes (cut between characters, the rest
    counted), at most MAX_LINES lines a run (the rest counted); the last line is kept for the error message."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.line = {"stdout": bytearray(), "stderr": bytearray()}  # each stream's line so far, its kept part
        self.cut = {"stdout": 0, "stderr": 0}  # bytes of that line past the kept part
        self.budget = MAX_LINES
        self.last = ""

    def feed(self, stream: str, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._add(stream, data, start, end)
            self._emit(stream)
            start = end + 1
        self._add(stream, data, start, len(data))

    def close(self, stream: str) -> None:
        """The stream ended: a last line without a newline is a line too."""
        if self.line[stream] or self.cut[stream]:
            self._emit(stream)

    def finish(self) -> None:
        if self.budget < 0:
            self.ctx.output("stderr", f"[{-self.budget} more output lines not logged]")

    def _add(self, stream: str, data: bytes, start: int, end: int) -> None:
        line = self.line[stream]
        keep = min(end - start, max(0, MAX_LINE + 4 - len(line)))  # 4: room to cut after a whole character
        line += data[start : start + keep]
        self.cut[stream] += end - start - keep

    def _emit(self, stream: str) -> None:
        line, cut = self.line[stream], self.cut[stream]
        if len(line) > MAX_LINE:
            end = MAX_LINE
            while end > MAX_LINE - 3 and line[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: cut before its start
                end -= 1
            cut += len(line) - end
            del line[end:]
        text = line.decode("utf-8", "replace").rstrip("\r")
        if cut:
            text += f" [line cut: {cut} more bytes]"
        line.clear()
        self.cut[stream] = 0
        self.last = text
        self.budget -= 1
        if self.budget >= 0:
            self.ctx.output(stream, text)


class _Group:
    """The command's process group, signalled only while its leader is not reaped: its pid (the group's id)
    cannot have been reused by then."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc
        self.lock = threading.Lock()

    def signal(self, sig: signal.Signals) -> None:
        with self.lock:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)

    def end(self) -> None:
        """Kill what is left in the group (the command itself if stopped early), close the pipes, reap. The
        leader is reaped here only, after the kill (but for the POLL fallback, where the check reaps)."""
        with self.lock:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
            self.proc.wait()


def _stop(group: _Group, clock: Clock) -> None:
    """SIGTERM to the command's process group, SIGKILL after KILL_GRACE if it is still there."""
    group.signal(signal.SIGTERM)

    def kill() -> None:
        clock.sleep(KILL_GRACE)
        group.signal(signal.SIGKILL)

    threading.Thread(target=kill, name=f"kill-{group.proc.pid}", daemon=True).start()
