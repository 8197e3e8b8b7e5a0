"""``${VAR}`` interpolation of schedule values from the environment.

Supported forms, as in POSIX shells: ``${VAR}`` (an error when unset),
``${VAR:-default}`` (default when unset or empty), ``${VAR:+word}`` (word when
set and non-empty, else empty: handy for ``enabled: ${APP_URL:+true}``), and
``$$`` for a literal dollar. A bare ``$NAME`` is left alone, so shell commands
keep their own variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dynoclock.config.problems import Invalid

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Variables whose values must never be shown: matched on the variable's name.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH|DSN", re.IGNORECASE)


def expand(value: str, env: Mapping[str, str], missing_ok: bool = False) -> str:
    """Replace every ``${...}`` in ``value``; raise Invalid on an unset variable unless ``missing_ok``."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "$$":
            return "$"
        if m.group(1) is None:
            raise Invalid("unterminated '${' (write $$ for a literal dollar)")
        body = m.group(1)
        name, op, word = _split(body)
        if not _NAME.fullmatch(name):
            raise Invalid(f"'${{{body}}}' is not a variable reference; expected ${{NAME}} or ${{NAME:-default}}")
        current = env.get(name)
        if op == ":-":
            return current if current else word
        if op == ":+":
            return word if current else ""
        if current is None:
            if missing_ok:
                return ""
            raise Invalid(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return current

    return _TOKEN.sub(sub, value)


def variables(value: str) -> list[str]:
    """Names of the variables ``value`` refers to (used to find secrets to redact)."""
    names = []
    for m in _TOKEN.finditer(value):
        if m.group(1):
            names.append(_split(m.group(1))[0])
    return names


def _split(body: str) -> tuple[str, str, str]:
    for op in (":-", ":+"):
        name, sep, word = body.partition(op)
        if sep:
            return name, op, word
    return body, "", ""
