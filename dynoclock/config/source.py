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

from dynoclock.config.problems import ConfigError, Problem

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
    """The parsed document plus the line (1-based) of each key path in it.

    ``problems`` found while building it (duplicate keys, unsupported tags) are kept, not raised, so that
    they are reported along with the rest; ``unreadable`` values (None in ``data``) are not to be checked again.
    """

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unreadable: set[Path] = field(default_factory=set)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


_QUOTE_HINT = ' (a value starting with * or @ must be quoted, e.g. cron: "*/5 * * * *")'
# Substrings of PyYAML's messages that mean "an unquoted * or @ value" (PyYAML quotes the character).
_YAML_HINTS = ("while scanning an alias", "found undefined alias", "found character '@'", "found character '`'")
_STD_TAG = "tag:yaml.org,2002:"
_MERGE = _STD_TAG + "merge"


def load(file: str, raw: bytes) -> Source:
    """Parse ``raw`` (the bytes of ``file``), or raise ConfigError naming the line if it is not YAML at all."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(file, bad_line, "", "not UTF-8 text (is this a YAML file?)")]) from None
    fast = _compose_fast(text)
    if fast is not None:
        loader, node = fast
        return _finish(file, loader, node)
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters (NUL...) right here
    except yaml.reader.ReaderError as exc:
        bad_line = text[: exc.position].count("\n") + 1
        what = f"unacceptable character #x{exc.character:04x}" if isinstance(exc.character, int) else exc.reason
        raise ConfigError([Problem(file, bad_line, "", f"not YAML text: {what} (is this a YAML file?)")]) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        hint = _QUOTE_HINT if any(k in what for k in _YAML_HINTS) else ""
        raise ConfigError([Problem(file, line, "", f"YAML syntax error: {what}{hint}")]) from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise ConfigError([Problem(file, None, "", f"YAML syntax error: {message}")]) from None
    finally:
        loader.dispose()
    return _finish(file, loader, node)


def _compose_fast(text: str) -> tuple[yaml.SafeLoader, yaml.Node | None] | None:
    """Compose with libyaml when PyYAML has it (4x faster on a 10,000-job schedule). On any error, None:
    the pure-Python parser then reads the file again for its clearer, located message."""
    c_loader = getattr(yaml, "CSafeLoader", None)
    if c_loader is None:
        return None
    loader = c_loader(text)
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _finish(file: str, loader: yaml.SafeLoader, node: yaml.Node | None) -> Source:
    if node is None:
        raise ConfigError([Problem(file, 1, "", "the file is empty; expected a mapping with a 'jobs:' key")])
    src = Source(file, None)
    problems: list[Problem] = []
    src.data = _build(loader, node, (), src, problems, set())
    src.problems = list(dict.fromkeys(problems))  # a merged anchor repeats its problems
    return src


def _build(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, src: Source, problems: list[Problem], active: set[int]
) -> Any:
    """Plain data for ``node``; ``active`` holds the collections being built, to catch an alias to itself."""
    src.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if node.tag not in (_STD_TAG + "map", _STD_TAG + "seq"):
            return _unreadable(src, problems, path, node.start_mark.line + 1, _unsupported(node.tag))
        if id(node) in active:
            return _unreadable(src, problems, path, src.lines[path], "a YAML alias refers to itself")
        active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return _build_mapping(loader, node, path, src, problems, active)
            return [_build(loader, item, (*path, i), src, problems, active) for i, item in enumerate(node.value)]
        finally:
            active.discard(id(node))
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError:  # an unknown tag, e.g. !!python/name:os.system
        return _unreadable(src, problems, path, node.start_mark.line + 1, _unsupported(node.tag))
    except (yaml.YAMLError, ValueError, KeyError):  # e.g. !!int abc
        what = f"cannot read {node.value!r} as {node.tag.replace(_STD_TAG, '!!')}"
        return _unreadable(src, problems, path, node.start_mark.line + 1, what)


def _unreadable(src: Source, problems: list[Problem], path: Path, line: int, message: str) -> None:
    problems.append(Problem(src.file, line, dotted(path), message))
    src.unreadable.add(path)


def _build_mapping(
    loader: yaml.SafeLoader, node: yaml.MappingNode, path: Path, src: Source, problems: list[Problem], active: set[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    merges = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            merges.append(value_node)
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            problems.append(Problem(src.file, key_node.start_mark.line + 1, dotted(path), "a key must be a plain word"))
            continue
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in out:
            first = src.lines.get((*path, key))
            problems.append(
                Problem(src.file, line, dotted((*path, key)), f"duplicate key (first defined at line {first})")
            )
            continue
        src.lines[(*path, key)] = line
        out[key] = _build(loader, value_node, (*path, key), src, problems, active)
    # YAML merge keys (<<: *common): the mapping's own keys win, then earlier sources over later ones.
    for merge_node in merges:
        sources = merge_node.value if isinstance(merge_node, yaml.SequenceNode) else [merge_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                what = "'<<' merges a mapping or a list of them (<<: *common)"
                problems.append(Problem(src.file, source.start_mark.line + 1, dotted(path), what))
                continue
            scratch = Source(src.file, None)
            merged = _build(loader, source, path, scratch, problems, active) or {}
            for key, value in merged.items():
                if key not in out:
                    out[key] = value
                    for sub, line in scratch.lines.items():
                        if sub[: len(path) + 1] == (*path, key):
                            src.lines.setdefault(sub, line)
                    src.unreadable.update(sub for sub in scratch.unreadable if sub[: len(path) + 1] == (*path, key))
    return out


def _unsupported(tag: str) -> str:
    return f"unsupported YAML tag {tag.replace(_STD_TAG, '!!')}: only plain values, lists and mappings are read"
