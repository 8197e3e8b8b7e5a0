"""Checks of the environment a valid schedule names, made by ``check`` and at start.

A schedule can be well formed and still unable to run here: ``python:`` names
a module that does not import, ``command:`` a program that is not installed,
an ``sql:``, ``enqueue:`` or ``celery:`` job has nothing to talk to. Each action
says what it lacks (``Action.environment_problem``); these problems are reported
like schedule errors (file, line, key path), before any job runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dynoclock.config.loader import Schedule
from dynoclock.config.problems import ConfigError, Problem
from dynoclock.config.source import dotted


def environment_problems(schedule: Schedule, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Problems of the enabled jobs with the environment: imports, programs, databases, queues."""
    env = os.environ if env is None else env
    problems = []
    for job in schedule.jobs.values():
        if not job.enabled or job.action is None:
            continue
        message = job.action.environment_problem(env)
        if message:
            path = ("jobs", job.id, job.kind)
            problems.append(Problem(schedule.file, schedule.lines.get(path), dotted(path), message))
    return problems


def check_environment(schedule: Schedule, env: Mapping[str, str] | None = None) -> None:
    problems = environment_problems(schedule, env)
    if problems:
        raise ConfigError(problems)
