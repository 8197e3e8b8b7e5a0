"""The one name for plain data whose shape is only known at run time.

A value of the schedule as read from YAML (config/source.py), before a parser has checked it, or of a JSON
document received (an API body, a job's args and kwargs on their way to a worker): ``None``, ``bool``, ``int``,
``float``, ``str`` (YAML's ``!!binary`` adds ``bytes``), lists and ``str``-keyed mappings of them, nested to any
depth. Code reading it checks with ``isinstance`` first (the ``as_*`` parsers of config/values.py take
``object``) or passes it on as is, so it is typed ``Any`` here, once, rather than as a recursive union that
every reader would have to narrow again.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JSONValue: TypeAlias = Any
JSONObject: TypeAlias = dict[str, JSONValue]  # a mapping of such values: a job's spec, an API body
