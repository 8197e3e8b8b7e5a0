"""The one name for plain data whose shape is only known at run time.

A value of the schedule as read from YAML (before a parser has checked it), a JSON document received or sent
(an API body, a worker's message, a status page): ``None``, ``bool``, ``int``, ``float``, ``str``, lists and
``str``-keyed mappings of them, nested to any depth. Code reading it checks with ``isinstance`` first (the
``as_*`` parsers in config/values.py), so it is typed ``Any`` here, once, rather than as a recursive union
that every reader would have to narrow again.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JSONValue: TypeAlias = Any
