"""Read schedule.yaml safely into plain values, remembering the line of every key.

PyYAML's ``safe_load`` forgets where things were, so we compose the node tree
(which keeps marks) and build the values ourselves: every later error can then
name ``file:line``. Only plain data is built (no object construction), duplicate
keys are errors rather than last-one-wins, and timestamps stay strings so that
one parser (ours) decides what an instant means. Nesting, alias uses and what aliases
expand to are bounded while composing and building, so a hostile file is refused cheaply.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass, field
from typing import cast

import yaml

from dynoclock.config import plain
from dynoclock.config.compose import ALIAS, MAPPING, MAX_DEPTH, SCALAR, SEQUENCE, Loader, Node, compose
from dynoclock.config.problems import ConfigError, Problem
from dynoclock.jsontypes import JSONValue

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
    data: JSONValue
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
_TEXT_TAGS = frozenset((_STD_TAG + "str", _STD_TAG + "timestamp"))  # values read as their text

# Bounds far beyond any real schedule, so that a hostile file (a "billion laughs" alias bomb, nesting
# thousands deep) is refused in well under a second and a few MB instead of minutes and gigabytes.
REUSE_MERGES = True  # _Builder._merge reuses what it read of a merge source (off: to compare with reading it again)
MAX_ALIAS_VALUES = 100_000  # values that expanding aliases (and merge keys) may add to those written out
_MULTIPLY = "found aliases that multiply (an alias bomb)"
_NESTED = f"found {MAX_DEPTH + 1} levels once it is expanded"


def quoted(text: str, limit: int = 60) -> str:
    """``text`` in quotes as found, shortened when long: ``'xxxxxxxxxxxxxxxxxxxxxxxx'... (5,000 characters)``."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit // 2]!r}... ({len(text):,} characters)"


def load(file: str, raw: bytes) -> Source:
    """Parse ``raw`` (the bytes of ``file``), or raise ConfigError naming the line if it is not YAML at all."""
    collecting = gc.isenabled()
    gc.disable()  # the cyclic collector would walk the growing tree again and again: 40% of a 10,000-job load
    try:
        return _load(file, raw)
    finally:
        if collecting:
            gc.enable()


def _load(file: str, raw: bytes) -> Source:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(file, bad_line, "", "not UTF-8 text (is this a YAML file?)")]) from None
    src = _plain_fast(file, text)
    if src is not None:
        return src
    fast = _compose_fast(file, text)
    if fast is not None:
        return _finish(file, *fast)
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters (NUL...) right here
    except yaml.reader.ReaderError as exc:
        bad_line = text[: exc.position].count("\n") + 1
        what = f"unacceptable character #x{exc.character:04x}" if isinstance(exc.character, int) else exc.reason
        raise ConfigError([Problem(file, bad_line, "", f"not YAML text: {what} (is this a YAML file?)")]) from None
    try:
        node, written = compose(file, loader)
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
    return _finish(file, loader, node, written)


def _plain_fast(file: str, text: str) -> Source | None:
    """The document in one pass with libyaml's parser (plain.py), when PyYAML has it and the document needs no
    node tree; else None, and the tree's way reads it again (a YAML error included, for its located message)."""
    c_loader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    if c_loader is None:
        return None
    loader = c_loader(text)
    src = Source(file, None)
    builder = _Builder(loader, file, 0)
    try:
        data = plain.build(loader, src, builder.scalar)
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    if data is None:
        return None
    src.data = data
    src.problems = list(dict.fromkeys(builder.problems))
    return src


def _compose_fast(file: str, text: str) -> tuple[Loader, Node | None, int] | None:
    """Parse with libyaml when PyYAML has it (5x faster on a 10,000-job schedule). On any YAML error, None:
    the pure-Python parser then reads the file again for its clearer, located message."""
    c_loader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    if c_loader is None:
        return None
    loader = c_loader(text)
    try:
        return loader, *compose(file, loader)
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _finish(file: str, loader: Loader, node: Node | None, written: int) -> Source:
    if node is None:
        raise ConfigError([Problem(file, 1, "", "the file is empty; expected a mapping with a 'jobs:' key")])
    src = Source(file, None)
    builder = _Builder(loader, file, written)
    src.data = builder.build(node, (), src, 0)
    src.problems = list(dict.fromkeys(builder.problems))  # a merged anchor repeats its problems
    return src


class _Builder:
    """Plain data from a composed tree. Aliases are expanded here, so here the expanded size (``MAX_ALIAS_VALUES``
    more than written) and depth (``MAX_DEPTH``) are bounded, against the alias in use when they are passed."""

    def __init__(self, loader: Loader, file: str, written: int):
        self.loader = loader
        self.file = file
        self.problems: list[Problem] = []
        self.budget = written + MAX_ALIAS_VALUES  # values built, merge sources each time they are merged
        self.active: set[int] = set()  # the collections being built, to catch an alias to itself
        self.aliases: list[tuple[Node, Path]] = []  # the aliases being expanded, outermost first
        self.last_alias: tuple[Node, Path] | None = None  # the alias expanded last, and where
        # A merge source of plain values read once (<<: *common in every job): by (id of its node, depth), its
        # values, its keys' lines and what building it took from the budget. See _merge.
        self.merged: dict[tuple[int, int], tuple[dict[str, JSONValue], list[tuple[str, int]], int]] = {}

    def build(self, node: Node, path: Path, src: Source, depth: int) -> JSONValue:
        """Plain data for ``node`` at ``path``, inside ``depth`` collections; lines and unreadable go to ``src``."""
        if node.kind == ALIAS:
            self.aliases.append((node, path))
            self.last_alias = (node, path)
            try:
                return self.build(node.target(), path, src, depth)
            finally:
                self.aliases.pop()
        self.budget -= 1
        if self.budget < 0:  # only through aliases: without them no value is built twice
            # The budget may run out on a value written out, just after an alias took the last of it: that alias.
            alias, where = self.aliases[0] if self.aliases else cast("tuple[Node, Path]", self.last_alias)
            what = f"YAML alias *{alias.name} takes the file past {MAX_ALIAS_VALUES:,} values added by aliases"
            raise self._refuse(alias, where, f"{what}: expected aliases that repeat a few settings, {_MULTIPLY}")
        src.lines.setdefault(path, node.line + 1)
        if node.kind != SCALAR:
            if node.tag not in (_STD_TAG + "map", _STD_TAG + "seq"):
                return self._unreadable(src, path, node.line + 1, _unsupported(node.tag))
            if id(node) in self.active:
                return self._unreadable(src, path, src.lines[path], "a YAML alias refers to itself")
            if depth == MAX_DEPTH:  # only through aliases: the file as written was bounded by compose
                alias, where = self.aliases[-1]
                what = f"YAML alias *{alias.name} nests the file more than {MAX_DEPTH} levels deep"
                raise self._refuse(alias, where, f"{what}: expected a schedule a few levels deep, {_NESTED}")
            self.active.add(id(node))
            try:
                if node.kind == MAPPING:
                    return self._mapping(node, path, src, depth + 1)
                return [self.build(item, (*path, i), src, depth + 1) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self.scalar(node, path, src)

    def scalar(self, node: Node, path: Path, src: Source) -> JSONValue:
        """A scalar's value (its problem recorded, and None, if it has none we read)."""
        tag, value = node.tag, node.value
        if tag in _TEXT_TAGS:  # most values: the text, as PyYAML's str constructor
            return value  # returns it; timestamps stay text (our parser decides what an instant means)
        longest = sys.get_int_max_str_digits()
        if tag == _STD_TAG + "int" and longest and len(value) > longest:  # int() would raise
            what = f"expected a number of at most {longest:,} digits (or text in quotes), got {quoted(value)}"
            return self._unreadable(src, path, node.line + 1, what)
        scalar = yaml.ScalarNode(tag, value, style=node.style)  # a moment's PyYAML node, for its constructor
        try:
            return self.loader.construct_object(scalar, deep=True)
        except yaml.constructor.ConstructorError:  # an unknown tag, e.g. !!python/name:os.system
            return self._unreadable(src, path, node.line + 1, _unsupported(tag))
        except (yaml.YAMLError, ValueError, KeyError):  # e.g. !!int abc
            what = f"cannot read {quoted(value)} as {tag.replace(_STD_TAG, '!!')}"
            return self._unreadable(src, path, node.line + 1, what)
        finally:
            self.loader.constructed_objects.pop(scalar, None)  # it would keep every scalar until the end

    def _unreadable(self, src: Source, path: Path, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, dotted(path), message))
        src.unreadable.add(path)

    def _refuse(self, alias: Node, path: Path, message: str) -> ConfigError:
        return ConfigError([Problem(self.file, alias.line + 1, dotted(path), message)])

    def _mapping(self, node: Node, path: Path, src: Source, depth: int) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {}
        merges = []
        pairs: list[Node] = node.value
        for key_node, value_node in zip(pairs[::2], pairs[1::2], strict=True):
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            line = key_node.line + 1
            if key_node.kind != SCALAR:
                self.problems.append(Problem(self.file, line, dotted(path), "a key must be a plain word"))
                continue
            key: str = key_node.value  # a scalar's text
            sub = (*path, key)
            if key in out:
                first = src.lines.get(sub)
                what = f"duplicate key (first defined at line {first})"
                self.problems.append(Problem(self.file, line, dotted(sub), what))
                continue
            src.lines[sub] = line
            if value_node.kind == SCALAR and value_node.tag in _TEXT_TAGS and self.budget > 0:
                self.budget -= 1  # what build does for text, without the call: most values of a schedule are text
                out[key] = value_node.value
            else:
                out[key] = self.build(value_node, sub, src, depth)
        # YAML merge keys (<<: *common): the mapping's own keys win, then earlier sources over later ones.
        for merge_node in merges:
            sources = merge_node.items() if merge_node.kind == SEQUENCE else [merge_node]
            for source in sources:
                target = source.target() if source.kind == ALIAS else source
                if target.kind != MAPPING:
                    what = "'<<' merges a mapping or a list of them (<<: *common)"
                    self.problems.append(Problem(self.file, source.line + 1, dotted(path), what))
                    continue
                self._merge(source, target, out, (path, src, depth))
        return out

    def _merge(self, source: Node, target: Node, out: dict[str, JSONValue], at: tuple[Path, Source, int]) -> None:
        """The keys of ``target`` (merged through ``source``, an alias or the mapping itself) that ``out`` lacks.

        A source whose values are all plain (no mapping, no list) and read without a problem is read once per
        depth and reused: its values cannot be changed, what it took from the budget is taken again each time,
        and where that would not fit (the budget runs out inside it), it is read again to fail as it would.
        ``at``: the merging mapping's path, its Source and depth."""
        path, src, depth = at
        memo = self.merged.get((id(target), depth)) if REUSE_MERGES else None
        if memo is not None and memo[2] <= self.budget and id(target) not in self.active:
            values, key_lines, cost = memo
            self.budget -= cost
            if source.kind == ALIAS:
                self.last_alias = (source, path)
            for key, line in key_lines:
                if key not in out:
                    out[key] = values[key]
                    src.lines.setdefault((*path, key), line)
            return
        problems, budget = len(self.problems), self.budget
        scratch = Source(self.file, None)
        merged = self.build(source, path, scratch, depth - 1) or {}
        taken = [key for key in merged if key not in out]
        out.update((key, merged[key]) for key in taken)
        taken_keys = set(taken)
        inside = len(path)  # one pass over the source's lines: a merge costs what the source holds
        for sub, line in scratch.lines.items():
            if len(sub) > inside and sub[inside] in taken_keys:
                src.lines.setdefault(sub, line)
        src.unreadable.update(sub for sub in scratch.unreadable if len(sub) > inside and sub[inside] in taken_keys)
        plain = isinstance(merged, dict) and not any(isinstance(v, (dict, list)) for v in merged.values())
        if plain and len(self.problems) == problems and not scratch.unreadable:
            key_lines = [(key, scratch.lines.get((*path, key), 0)) for key in merged]
            if all(line for _, line in key_lines):
                self.merged[id(target), depth] = (merged, key_lines, budget - self.budget)


def _unsupported(tag: str) -> str:
    return f"unsupported YAML tag {tag.replace(_STD_TAG, '!!')}: only plain values, lists and mappings are read"
