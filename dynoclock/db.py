"""Database URLs and engines, shared by ``sql:`` jobs and the clock's own state.

SQLAlchemy gives one engine (a connection pool) per URL for Postgres, SQLite and
anything else it has a driver for. Heroku's ``postgres://`` scheme, which
SQLAlchemy refuses, is read as Postgres through psycopg 3.
"""

from __future__ import annotations

import os
import threading

import sqlalchemy
from sqlalchemy.engine import Engine, make_url

from .redact import redact_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


class DatabaseUrlError(ValueError):
    """A URL that names no usable database; the message never shows the password."""


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` -> ``postgresql+psycopg://`` (the driver we ship)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def engine_for(url: str) -> Engine:
    """The pooled engine for ``url``, made once per process."""
    key = normalize_url(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create(key)
        return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _create(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise DatabaseUrlError(f"cannot read the database URL {redact_url(url)!r}") from None
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10, "application_name": "dynoclock"}
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
    try:
        return sqlalchemy.create_engine(parsed, **kwargs)
    except Exception as exc:  # no driver for this scheme, bad options
        raise DatabaseUrlError(f"cannot use the database URL {redact_url(url)!r}: {exc}") from None
