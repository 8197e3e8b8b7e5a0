"""What a job does: one module per action kind, each with ``parse`` (schedule -> spec) and the spec's ``run``.

A job names exactly one action key. ``JOB_KEYS`` lists the job-level options an
action reads (``args`` for python, ``env`` for command, ...): they are errors on
jobs of another kind, and ignored there when they come from ``defaults:``.
"""

from __future__ import annotations

from types import ModuleType

from dynoclock.actions import celery, command, enqueue, http, python, sql

KINDS: dict[str, ModuleType] = {
    "http": http,
    "sql": sql,
    "python": python,
    "command": command,
    "enqueue": enqueue,
    "celery": celery,
}

JOB_KEYS: dict[str, frozenset[str]] = {kind: frozenset(module.JOB_KEYS) for kind, module in KINDS.items()}
ALL_JOB_KEYS = frozenset().union(*JOB_KEYS.values())
