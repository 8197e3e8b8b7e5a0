"""``command:`` jobs: run one of the app's commands (``flask scheduled``) as a subprocess."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from dynoclock.actions.base import JobFailed, RunContext
from dynoclock.actions.shellvars import shell_script
from dynoclock.config.envvars import Expanded
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_bool, as_nonempty_str, as_str_map, show
from dynoclock.timesource import Clock

JOB_KEYS: tuple[str, ...] = ("shell", "env", "cwd")
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when a command must stop
MAX_LINES = 1000  # output lines logged per run; the rest are counted, not logged
MAX_LINE = 2000  # characters kept of one output line


@dataclass(frozen=True)
class CommandAction:
    argv: tuple[str, ...]  # with shell: a single item, the shell script
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # the script's ${...} values, passed as variables

    def run(self, ctx: RunContext) -> str:
        """Run the command in its own process group; its output goes to the log line by line."""
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
        ctx.on_cancel(lambda: _stop(proc, ctx.clock))
        tail: deque[str] = deque(maxlen=20)
        budget = [MAX_LINES]
        readers = [
            threading.Thread(target=_pump, args=(pipe, name, ctx, tail, budget), daemon=True)
            for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
        ]
        for reader in readers:
            reader.start()
        code = proc.wait()
        for reader in readers:
            reader.join(timeout=1.0)
        if budget[0] < 0:
            ctx.output("stderr", f"[{-budget[0]} more output lines not logged]")
        if code != 0:
            what = f"signal={signal.Signals(-code).name}" if code < 0 else f"exit={code}"
            last = f": {tail[-1]}" if tail else ""
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
            return f"{program!r} is not on PATH"
        if self.cwd and not os.path.isdir(self.cwd):
            return f"cwd {self.cwd!r} is not a directory"
        return None


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> CommandAction | None:
    before = len(report.problems)
    opts: dict[str, Any] = {}
    for key, parser in (("shell", as_bool), ("env", as_str_map), ("cwd", as_nonempty_str)):
        if key in extras:
            raw, where = extras[key]
            opts[key] = report.parse(where, raw, parser)
    shell = bool(opts.get("shell"))
    command = report.parse(path, value, lambda v: as_command(v, shell))
    if command is None or len(report.problems) > before:
        return None
    argv, values = command
    return CommandAction(argv, values=values, **opts)


def as_command(value: Any, shell: bool) -> tuple[tuple[str, ...], dict[str, str]]:
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


def _pump(pipe: IO[bytes] | None, name: str, ctx: RunContext, tail: deque[str], budget: list[int]) -> None:
    """Copy one pipe to the log, line by line, bounded in lines and line length."""
    if pipe is None:
        return
    with pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE]
            tail.append(line)
            budget[0] -= 1
            if budget[0] >= 0:
                ctx.output(name, line)


def _stop(proc: subprocess.Popen[bytes], clock: Clock) -> None:
    """SIGTERM to the command's process group, SIGKILL after KILL_GRACE if it is still there."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)

    def kill() -> None:
        clock.sleep(KILL_GRACE)
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)

    threading.Thread(target=kill, name=f"kill-{proc.pid}", daemon=True).start()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
