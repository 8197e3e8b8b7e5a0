"""Which values of a schedule are secrets, so that the redactor masks them wherever they would be printed.

A value is a secret when it comes from a secret-named variable (``${CLOCK_TOKEN}``), when it is written under a
credential-like name (an ``Authorization`` or ``X-Api-Key`` header, an ``api_key`` query parameter, a command's
``API_TOKEN`` variable, ``sign:``), with or without ``${VAR}``, or when it is the password of a URL; an error page
may echo any of them, or the ``Basic`` base64 that an HTTP client derives from a URL's ``user:password``.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator, Mapping
from urllib.parse import unquote

from dynoclock.config.envvars import SECRET_NAME, expand, variables
from dynoclock.config.problems import Invalid

# Header and query parameter names whose values are credentials (matched on the whole name, any case).
CREDENTIAL_NAME = re.compile(
    r"(proxy-)?authorization|cookie|.*([-_]|^)(key|token)|.*(secret|password|passwd|credential).*", re.IGNORECASE
)
_SCHEME_VALUE = re.compile(r"[A-Za-z][\w.+-]*\s+(\S+)\s*")  # "Bearer <token>", "Basic <base64>"
_USERINFO = re.compile(r"\b[a-z][a-z0-9+.-]*://([^/?#\s@]+)@", re.IGNORECASE)


def schedule_secrets(tree: object, env: Mapping[str, str]) -> frozenset[str]:
    """Every secret value in the schedule's raw data, with ``${VAR}`` expanded from ``env``."""
    found: list[str] = []
    todo: list[tuple[object, str, str]] = [(tree, "", "")]  # (value, its key, the key above): no recursion
    while todo:
        value, key, parent = todo.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                if type(item) is str:  # most values: looked at here rather than pushed and popped
                    if "$" in item or "://" in item or key in _CREDENTIAL_PARENTS:
                        found.extend(_secrets_of(item, env, str(name), key))
                else:
                    todo.append((item, str(name), key))
        elif isinstance(value, list):
            todo.extend((item, key, parent) for item in value)
        elif value is not None and not isinstance(value, bool):
            text = str(value)
            # What _secrets_of looks for, checked here first: most values of a big schedule have none of it.
            if "$" in text or "://" in text or parent in _CREDENTIAL_PARENTS:
                found.extend(_secrets_of(text, env, key, parent))
    return frozenset(found)


_CREDENTIAL_PARENTS = frozenset(("headers", "params", "env", "http"))  # where is_credential can be true


def _secrets_of(text: str, env: Mapping[str, str], key: str, parent: str) -> Iterator[str]:
    if "$" in text:  # most values refer to no variable
        yield from (env[n] for n in variables(text) if SECRET_NAME.search(n) and env.get(n))
        with contextlib.suppress(Invalid):  # reported by the loader; what is written is still worth masking
            text = expand(text, env, missing_ok=True)
    if is_credential(key, parent):
        yield from credential_forms(text, key.lower())
    if "://" in text:  # what _USERINFO needs: most values hold no URL
        yield from url_credentials(text)


def is_credential(key: str, parent: str) -> bool:
    """Whether the value at ``parent.key`` is a credential: a header or query parameter named like one, a
    command's variable named like a secret one, an http job's ``sign``."""
    if parent in ("headers", "params"):
        return CREDENTIAL_NAME.fullmatch(key) is not None
    if parent == "env":
        return SECRET_NAME.search(key) is not None
    return parent == "http" and key == "sign"


def credential_forms(value: str, name: str = "") -> Iterator[str]:
    """What to mask of the credential under ``name``: the token of an Authorization's ``Bearer <token>`` (the
    scheme stays readable), each value of a Cookie header, else the whole value."""
    value = value.strip()
    if name.endswith("authorization") and (match := _SCHEME_VALUE.fullmatch(value)):
        yield match.group(1)
    elif name == "cookie" and "=" in value:
        yield from (pair.partition("=")[2].strip() for pair in value.split(";"))
    else:
        yield value


def url_credentials(text: str) -> Iterator[str]:
    """For each URL with ``user:password@`` in ``text``: the password (as written and decoded) and the base64 of
    ``user:password`` that goes out as ``Authorization: Basic ...``."""
    for match in _USERINFO.finditer(text):
        user, colon, password = match.group(1).partition(":")
        if not colon:
            continue
        yield password
        yield unquote(password)
        for pair in {f"{user}:{password}", f"{unquote(user)}:{unquote(password)}"}:
            for encoding in ("latin-1", "utf-8"):
                try:
                    yield base64.b64encode(pair.encode(encoding)).decode()
                except UnicodeEncodeError:
                    continue
