"""Plain data straight from the parser's events, in one pass, for the documents most schedules are.

``source.py`` composes a node tree and then builds values from it: two passes, and a node per value, so that
anchors, aliases and merge keys can be expanded (and bounded). A document without any of them, without
explicit tags and duplicate keys, and nested at most ``MAX_DEPTH`` levels needs neither: its values, lines
and problems are built here as the events come, as ``_Builder.build`` would build them from the tree (a
third less time for a 10,000-job schedule). At the first event that needs the tree, ``build`` gives up
(None) and the caller reads the text again the long way, which also gives every message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml

from dynoclock.config.compose import MAX_DEPTH, SCALAR, Loader, Node
from dynoclock.jsontypes import JSONValue

if TYPE_CHECKING:
    from dynoclock.config.source import Path, Source

_STD_TAG = "tag:yaml.org,2002:"
_TEXT_TAGS = frozenset((_STD_TAG + "str", _STD_TAG + "timestamp"))  # values read as their text
# A scalar that is not text: its value (or None after a problem), as _Builder.scalar reads it.
ScalarReader = Callable[[Node, "Path", "Source"], JSONValue]


def build(loader: Loader, src: Source, scalar: ScalarReader) -> JSONValue | None:
    """The document's data, its key lines in ``src.lines`` (unreadable values in ``src.unreadable``, their
    problems through ``scalar``); None when the document needs the node tree (or is empty, or not a mapping).
    YAML errors propagate. The events are read untyped (typing.cast is a call, and this reads every event)."""
    get_event: Callable[[], Any] = loader.get_event
    get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None
    get_event()  # document start
    event: Any = get_event()
    first_line = event.start_mark.line + 1
    if type(event) is not yaml.MappingStartEvent or event.anchor is not None or event.tag not in (None, "!"):
        return None
    resolve: Callable[[type[yaml.Node], str, object], str] = loader.resolve
    tags: dict[str, str] = {}  # a plain scalar's tag, by its text: the resolver tries its expressions in turn
    text_tag = resolve(yaml.ScalarNode, "", (False, False))  # of any other scalar (the resolver's default)
    texts: dict[str, str] = {}  # one string per text, as compose keeps them (not sys.intern's table: it never shrinks)
    intern = texts.setdefault
    lines = src.lines
    root: dict[str, JSONValue] = {}
    lines[()] = first_line
    # The collections being read, outermost first: (collection, its path); the innermost in the locals below.
    stack: list[tuple[Any, Path]] = []
    container: Any = root
    path: Path = ()
    mapping = True
    key: Any = None  # in a mapping, the key (str) whose value comes next; None while a key is awaited
    while True:
        event = get_event()
        kind = type(event)
        if kind is yaml.ScalarEvent:
            tag = event.tag
            if event.anchor is not None or (tag is not None and tag != "!"):
                return None
            value = intern(event.value, event.value)
            implicit = event.implicit
            if implicit[0]:  # plain (or tagged "!"): the resolver reads its text
                tag = tags.get(value)
                if tag is None:
                    tag = tags[value] = resolve(yaml.ScalarNode, value, implicit)
            else:  # quoted or a block: text, whatever it reads
                tag = text_tag
            line = event.start_mark.line + 1
            if mapping and key is None:  # a key
                if value in container or tag == _STD_TAG + "merge":
                    return None  # duplicate keys and merges: the tree's way says what they do
                key = value
                lines[(*path, key)] = line
                continue
            sub = (*path, key) if mapping else (*path, len(container))
            if not mapping:
                lines.setdefault(sub, line)
            if tag in _TEXT_TAGS:
                item: JSONValue = value
            else:
                item = scalar(Node(SCALAR, tag, value, line - 1, None, event.style), sub, src)
            if mapping:
                container[key] = item
                key = None
            else:
                container.append(item)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.anchor is not None or event.tag not in (None, "!") or (mapping and key is None):
                return None  # an anchor, a tag, or a collection as a key
            if len(stack) + 1 == MAX_DEPTH:
                return None  # the tree's way refuses it, at its line
            sub = (*path, key) if mapping else (*path, len(container))
            new: Any = {} if kind is yaml.MappingStartEvent else []
            if mapping:
                container[key] = new
            else:
                lines.setdefault(sub, event.start_mark.line + 1)
                container.append(new)
            stack.append((container, path))
            container, path, mapping, key = new, sub, kind is yaml.MappingStartEvent, None
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            if not stack:
                break
            container, path = stack.pop()
            mapping = type(container) is dict
            key = None
        else:  # an alias
            return None
    get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        return None  # another document: refused the tree's way
    return root
