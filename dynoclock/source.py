"""Read schedule.yaml safely into plain values, remembering the line of every key.

PyYAML's ``safe_load`` forgets where things were, so we compose the node tree
(which keeps marks) and build the values ourselves: every later error can then
name ``file:line``. Only plain data is built (no object construction), duplicate
keys are errors rather than last-one-wins, and timestamps stay strings so that
one parser (ours) decides what an instant means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError, Problem

Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """``("jobs", "a", "http", "headers")`` -> ``jobs.a.http.headers``; list items as ``[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass
class Source:
    """The parsed document plus the line (1-based) of each key path in it."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


_YAML_HINTS = {
    "found character that cannot start any token": (
        ' (a value starting with * or @ must be quoted, e.g. cron: "*/5 * * * *")'
    ),
    "found undefined alias": ' (a value starting with * must be quoted, e.g. cron: "* * * * *")',
}


def load(file: str, raw: bytes) -> Source:
    """Parse ``raw`` (the bytes of ``file``) or raise ConfigError naming the line."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(file, bad_line, "", "not UTF-8 text (is this a YAML file?)")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        hint = next((h for k, h in _YAML_HINTS.items() if k in what), "")
        raise ConfigError([Problem(file, line, "", f"YAML syntax error: {what}{hint}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"YAML syntax error: {exc}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError([Problem(file, 1, "", "the file is empty; expected a mapping with a 'jobs:' key")])
    src = Source(file, None)
    problems: list[Problem] = []
    src.data = _build(loader, node, (), src, problems)
    if problems:
        raise ConfigError(problems)
    return src


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path, src: Source, problems: list[Problem]) -> Any:
    src.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *defaults)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(src.file, key_node.start_mark.line + 1, _d(path), "a key must be a plain word"))
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in out:
                first = src.lines.get((*path, key))
                problems.append(
                    Problem(src.file, line, _d((*path, key)), f"duplicate key (first defined at line {first})")
                )
                continue
            src.lines[(*path, key)] = line
            out[key] = _build(loader, value_node, (*path, key), src, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), src, problems) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # e.g. an unknown !tag
        problems.append(Problem(src.file, node.start_mark.line + 1, _d(path), f"cannot read value: {exc}"))
        return None


def _d(path: Path) -> str:
    return dotted(path)
