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


class Expanded(str):
    """A string whose ``${...}`` were expanded, remembering which parts came from the environment: ``pieces``
    holds the schedule's own text at even indexes and each non-empty value of a variable at odd ones (the words
    of ``${VAR:-word}`` and ``${VAR:+word}`` count as the schedule's text), so that a shell command can hand the
    values to ``sh`` as variables rather than as script text (actions/shellvars.py); ``refs`` holds each
    value's ``${...}`` as written, for messages."""

    pieces: tuple[str, ...]
    refs: tuple[str, ...]

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        """Pickled as a plain str: an RQ job's arguments must unpickle where dynoclock is not installed."""
        return str, (str(self),)


def expand(value: str, env: Mapping[str, str], missing_ok: bool = False) -> str:
    """Replace every ``${...}`` in ``value``; raise Invalid on an unset variable unless ``missing_ok``.
    A value that took text from the environment comes back as an ``Expanded``."""

    def sub(m: re.Match[str]) -> tuple[str, bool]:
        """The text for one ``${...}``, and whether it is a variable's value (rather than the schedule's word)."""
        body = m.group(1)
        if body is None:
            raise Invalid("unterminated '${' (write $$ for a literal dollar)")
        name, op, word = _split(body)
        if not _NAME.fullmatch(name):
            raise Invalid(f"'${{{body}}}' is not a variable reference; expected ${{NAME}} or ${{NAME:-default}}")
        current = env.get(name)
        if op == ":-":
            return (current, True) if current else (word, False)
        if op == ":+":
            return word if current else "", False
        if current is None:
            if missing_ok:
                return "", False
            raise Invalid(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return current, True

    if "$" not in value:  # most values: nothing to expand
        return value
    pieces, refs = [""], []
    end = 0
    for m in _TOKEN.finditer(value):
        pieces[-1] += value[end : m.start()]
        end = m.end()
        text, from_env = ("$", False) if m.group(0) == "$$" else sub(m)
        if from_env and text:
            pieces += [text, ""]
            refs.append(m.group(0))
        else:
            pieces[-1] += text
    pieces[-1] += value[end:]
    if len(pieces) == 1:
        return pieces[0]
    expanded = Expanded("".join(pieces))
    expanded.pieces, expanded.refs = tuple(pieces), tuple(refs)
    return expanded


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
