"""The node tree of a YAML document, composed from the parser's events with the line of every node.

PyYAML's composer keeps two marks per node and recurses (its C composer crashes at 100,000 levels); this one
keeps a line, loops, and bounds nesting and alias uses (``MAX_DEPTH``, ``MAX_ALIASES``) as it reads, so that a
hostile file is refused at the line where it goes too far. ``source.py`` builds plain values from the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, cast

import yaml

from dynoclock.config.problems import ConfigError, Problem

# PyYAML's own parser, or libyaml's (5x faster) when PyYAML has it: their events, nodes and values are alike.
Loader: TypeAlias = "yaml.SafeLoader | yaml.CSafeLoader"
_Resolve: TypeAlias = "Callable[[type[yaml.Node], str | None, object], str]"  # Resolver.resolve
# What the parser yields inside a document (stream and document events are read around the loop).
_Event: TypeAlias = (
    "yaml.ScalarEvent | yaml.SequenceStartEvent | yaml.MappingStartEvent | yaml.AliasEvent | yaml.CollectionEndEvent"
)


# Bounds far beyond any real schedule (see source.py for the one on what aliases expand to).
MAX_DEPTH = 100  # collections nested in one another, the top mapping included
MAX_ALIASES = 10_000  # uses of anchors (*name) in the file

SCALAR, SEQUENCE, MAPPING, ALIAS = range(4)


class Node:
    """One node of the composed tree, smaller than PyYAML's (a line instead of two marks, no attribute dict: for a
    10,000-job file the tree took 25 MB at the peak of the clock's start-up, now about a quarter).

    ``kind`` is SCALAR, SEQUENCE, MAPPING or ALIAS; ``tag`` as resolved; ``line`` 0-based, where it starts;
    ``value``: a scalar's text (``style``: its quoting), a sequence's items, a mapping's keys and values in turn
    (key, value, key, value...), an alias's anchored node. ``name``: an alias's anchor name (``*name``); on an
    anchored node, the mark where the anchor was defined (for the duplicate-anchor message)."""

    # "_spare" is never set: with it a node takes 88 bytes, which the allocator serves from its 96-byte pools, not
    # the 80-byte ones where the file's texts of 16 to 30 characters (job ids, instants, commands) are: the few that
    # outlive the tree, spread among its 100,000 nodes, kept each pool of nodes from being reused once the tree was
    # freed (4 MB of a 10,000-job clock's memory, CPython's small-object pools: 16-byte size classes).
    __slots__ = ("_spare", "kind", "line", "name", "style", "tag", "value")
    # What ``kind`` says (str, list[Node] or Node). Any: the loops over every node read it without typing.cast,
    # which is a call; items() and target() give it typed elsewhere.
    value: Any

    def __init__(
        self,
        kind: int,
        tag: str,
        value: str | list[Node] | Node,
        line: int,
        name: str | yaml.Mark | None = None,
        style: str | None = None,
    ):
        self.kind, self.tag, self.value, self.line, self.name, self.style = kind, tag, value, line, name, style

    def items(self) -> list[Node]:
        """A collection's items (a mapping's: key, value, key, value...)."""
        return cast("list[Node]", self.value)

    def target(self) -> Node:
        """An alias's anchored node."""
        return cast("Node", self.value)


# The parser's event classes, by what the composer does with them (looked up by exact class: isinstance chains
# were a third of the loop; a subclass, which neither parser makes, takes the isinstance path in _event_kind).
_SCALAR_EVENT, _START_EVENT, _END_EVENT, _ALIAS_EVENT = range(4)
_EVENT_KINDS: dict[type, int] = {
    yaml.ScalarEvent: _SCALAR_EVENT,
    yaml.SequenceStartEvent: _START_EVENT,
    yaml.MappingStartEvent: _START_EVENT,
    yaml.SequenceEndEvent: _END_EVENT,
    yaml.MappingEndEvent: _END_EVENT,
    yaml.AliasEvent: _ALIAS_EVENT,
}


def _event_kind(event: _Event) -> int:
    kind = _EVENT_KINDS.get(type(event))
    if kind is not None:
        return kind
    if isinstance(event, yaml.ScalarEvent):
        return _SCALAR_EVENT
    if isinstance(event, yaml.CollectionStartEvent):
        return _START_EVENT
    if isinstance(event, yaml.AliasEvent):
        return _ALIAS_EVENT
    return _END_EVENT


def compose(file: str, loader: Loader) -> tuple[Node | None, int]:
    """The document's node tree and how many nodes it writes out, composed from the parser's events as
    PyYAML's composer does, but without recursion (its C composer crashes at 100,000 levels) and within
    ``MAX_DEPTH`` and ``MAX_ALIASES``: past them, ConfigError at the line of the offending node or alias.
    ``loader`` is a SafeLoader or a CSafeLoader (their events are alike; the type stubs tell them apart).

    Every event read here has its marks; libyaml's Mark has the fields of PyYAML's (the stubs name two classes)."""
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None, 0
    loader.get_event()  # document start
    root_mark = cast("yaml.Mark", cast("yaml.Event", loader.peek_event()).start_mark)  # where the content starts
    anchors: dict[str, Node] = {}
    open_: list[Node] = []  # collections being read
    items: list[Node] = []  # the items so far of the innermost one
    root: Node | None = None
    aliases = written = 0
    # Untyped (Any) in the loop: typing.cast is a call, and the loop runs for every event of the file.
    get_event: Callable[[], Any] = loader.get_event
    resolve: _Resolve = loader.resolve  # untyped in the stubs
    # A plain scalar's tag depends on its text and implicitness only, and the same keys and values recur in every
    # job: resolved once each (the resolver tries its regular expressions in turn).
    scalar_tags: dict[tuple[str, object], str] = {}
    # One string per text: the same few keys (and often the same values) in every job, not one per use. In a dict
    # of this load's, not sys.intern's table: that one never shrinks (1 MB kept for a 10,000-job file).
    texts: dict[str, str] = {}
    intern = texts.setdefault
    kinds = _EVENT_KINDS
    while root is None:
        event = get_event()
        kind = kinds.get(type(event))
        if kind is None:
            kind = _event_kind(event)
        node: Node
        if kind == _SCALAR_EVENT:
            tag = event.tag
            value = intern(event.value, event.value)
            if tag is None or tag == "!":
                implicit = event.implicit
                tag = scalar_tags.get((value, implicit))
                if tag is None:
                    tag = scalar_tags[value, implicit] = resolve(yaml.ScalarNode, value, implicit)
            node = Node(SCALAR, tag, value, event.start_mark.line, None, event.style)
        elif kind == _END_EVENT:
            done = open_.pop()
            if open_:
                items = open_[-1].value
            else:
                root = done
            continue
        elif kind == _START_EVENT:
            node = _collection(event, resolve)
        else:
            mark = event.start_mark
            aliases += 1
            if aliases > MAX_ALIASES:
                what = f"more than {MAX_ALIASES:,} YAML aliases: expected a few *name references"
                raise _at(file, mark, f"{what}, found the {MAX_ALIASES + 1:,}st here")
            if event.anchor not in anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
            target = anchors[event.anchor]
            node = Node(ALIAS, target.tag, target, mark.line, event.anchor)
        if kind != _ALIAS_EVENT:
            written += 1
            anchor = event.anchor
            if anchor is not None:
                mark = event.start_mark
                if anchor in anchors:
                    first = cast("yaml.Mark", anchors[anchor].name)
                    what = f"found duplicate anchor {anchor!r}; first occurrence"
                    raise yaml.composer.ComposerError(what, first, "second occurrence", mark)
                node.name = mark
                anchors[anchor] = node
        if open_:
            items.append(node)
        elif kind != _START_EVENT:
            root = node  # the whole document is one value
        if kind == _START_EVENT:
            if len(open_) == MAX_DEPTH:
                what = f"nested more than {MAX_DEPTH} levels deep: expected a schedule a few levels deep"
                raise _at(file, event.start_mark, f"{what}, found a {MAX_DEPTH + 1}st level here")
            items = node.value
            open_.append(node)
    loader.get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        following = get_event()
        raise yaml.composer.ComposerError(
            "expected a single document in the stream", root_mark, "but found another document", following.start_mark
        )
    return root, written


def _collection(event: yaml.CollectionStartEvent, resolve: _Resolve) -> Node:
    """An empty sequence or mapping for ``event``, its tag resolved as PyYAML's composer does."""
    tag = event.tag
    kind, pyyaml_kind = (
        (SEQUENCE, yaml.SequenceNode) if isinstance(event, yaml.SequenceStartEvent) else (MAPPING, yaml.MappingNode)
    )
    if tag is None or tag == "!":
        tag = resolve(pyyaml_kind, None, event.implicit)
    return Node(kind, tag, [], cast("yaml.Mark", event.start_mark).line)


def _at(file: str, mark: yaml.Mark, message: str) -> ConfigError:
    return ConfigError([Problem(file, mark.line + 1, "", message)])
