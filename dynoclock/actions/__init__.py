"""What a job does: one module per action kind (http, sql, python, command, enqueue, celery), each an
``ActionKind``: ``parse`` (schedule entry -> ``Action``) and ``JOB_KEYS``.

A job names exactly one action key. ``JOB_KEYS`` lists the job-level options an
action reads (``args`` for python, ``env`` for command, ...): they are errors on
jobs of another kind, and ignored there when they come from ``defaults:``.
"""

from __future__ import annotations

from dynoclock.actions import celery, command, enqueue, http, python, sql
from dynoclock.actions.base import Action, ActionKind

__all__ = ["ALL_JOB_KEYS", "JOB_KEYS", "KINDS", "Action", "ActionKind"]

KINDS: dict[str, ActionKind] = {
    "http": http,
    "sql": sql,
    "python": python,
    "command": command,
    "enqueue": enqueue,
    "celery": celery,
}

JOB_KEYS: dict[str, frozenset[str]] = {kind: frozenset(module.JOB_KEYS) for kind, module in KINDS.items()}
ALL_JOB_KEYS = frozenset().union(*JOB_KEYS.values())
