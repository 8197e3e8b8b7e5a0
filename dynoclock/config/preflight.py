"""Checks of the environment a valid schedule names, made by ``check`` and at start.

A schedule can be well formed and still unable to run here: ``python:`` names
a module that does not import, ``command:`` a program that is not installed,
an ``sql:`` job has no database to talk to. These problems are reported like
schedule errors (file, line, key path), before any job runs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from collections.abc import Mapping

from dynoclock.actions.base import JobFailed
from dynoclock.actions.celery import CeleryAction
from dynoclock.actions.command import CommandAction
from dynoclock.actions.enqueue import EnqueueAction
from dynoclock.actions.python import PythonAction, resolve
from dynoclock.actions.sql import SqlAction
from dynoclock.config.loader import Job, Schedule
from dynoclock.config.problems import ConfigError, Problem
from dynoclock.config.source import dotted


def environment_problems(schedule: Schedule, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Problems of the enabled jobs with the environment: imports, programs, databases, queues."""
    env = os.environ if env is None else env
    problems = []
    for job in schedule.jobs.values():
        if not job.enabled or job.action is None:
            continue
        message = _problem(job, env)
        if message:
            path = ("jobs", job.id, job.kind)
            problems.append(Problem(schedule.file, schedule.lines.get(path), dotted(path), message))
    return problems


def check_environment(schedule: Schedule, env: Mapping[str, str] | None = None) -> None:
    problems = environment_problems(schedule, env)
    if problems:
        raise ConfigError(problems)


@functools.lru_cache(maxsize=4096)
def _which(program: str, path: str) -> str | None:
    """shutil.which, once per (program, PATH): a schedule may name the same program thousands of times."""
    return shutil.which(program, path=path)


def _problem(job: Job, env: Mapping[str, str]) -> str | None:
    action = job.action
    if isinstance(action, PythonAction):
        for target in (action.target, action.app):
            if target is None:
                continue
            try:
                resolve(target)
            except JobFailed as exc:
                return str(exc).split(": ", 1)[1]
    elif isinstance(action, CommandAction) and not action.shell:
        program = action.argv[0]
        cwd = action.cwd or "."
        if os.sep in program:
            if not os.access(os.path.join(cwd, program), os.X_OK):
                return f"{program!r} is not an executable file"
        elif _which(program, action.env.get("PATH", os.environ.get("PATH", ""))) is None:
            return f"{program!r} is not on PATH"
        if action.cwd and not os.path.isdir(action.cwd):
            return f"cwd {action.cwd!r} is not a directory"
    elif isinstance(action, SqlAction) and not action.database and not env.get("DATABASE_URL"):
        return "no database: set 'database:' on the job, or DATABASE_URL"
    elif isinstance(action, EnqueueAction) and not action.redis and not env.get("REDIS_URL"):
        return "no Redis: set 'redis:' in enqueue, or REDIS_URL"
    elif isinstance(action, CeleryAction):
        if importlib.util.find_spec("celery") is None:
            return "celery: jobs need the celery package: pip install celery"
        if not action.broker and not env.get("CELERY_BROKER_URL") and not env.get("REDIS_URL"):
            return "no broker: set 'broker:' in celery, or CELERY_BROKER_URL / REDIS_URL"
    return None
