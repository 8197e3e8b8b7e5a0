"""``command:`` jobs: run one of the app's commands (``flask scheduled``) as a subprocess."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from ..errors import Invalid
from ..source import Path
from ..validate import Report, as_bool, as_nonempty_str, as_str_map, show

JOB_KEYS = ("shell", "env", "cwd")


@dataclass(frozen=True)
class CommandAction:
    argv: tuple[str, ...]  # with shell: a single item, the shell script
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> CommandAction | None:
    before = len(report.problems)
    opts: dict[str, Any] = {}
    for key, parser in (("shell", as_bool), ("env", as_str_map), ("cwd", as_nonempty_str)):
        if key in extras:
            raw, where = extras[key]
            opts[key] = report.parse(where, raw, parser)
    shell = bool(opts.get("shell"))
    argv = report.parse(path, value, lambda v: as_argv(v, shell))
    if argv is None or len(report.problems) > before:
        return None
    return CommandAction(argv, **opts)


def as_argv(value: Any, shell: bool) -> tuple[str, ...]:
    """A list is the argv as is; a string is split like a shell would, or given to ``sh -c`` with shell: true."""
    if isinstance(value, list):
        if not value:
            raise Invalid("expected a command like [flask, scheduled], got an empty list")
        if shell:
            raise Invalid("with shell: true, write the command as one string")
        for item in value:
            if isinstance(item, (dict, list)) or item is None:
                raise Invalid(f"expected each argument as text, got {show(item)}")
        return tuple(str(item) for item in value)
    text = as_nonempty_str(value)
    if shell:
        return (text,)
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise Invalid(f"cannot split {text!r} into arguments: {exc}") from None
    return tuple(argv)
