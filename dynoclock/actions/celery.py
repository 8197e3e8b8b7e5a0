"""``celery:`` jobs: send a task by name to the app's Celery workers (Celery is an optional extra)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynoclock.actions.base import JobFailed, RunContext
from dynoclock.actions.tasks import EXAMPLE_TASK, TASK_PARSERS, Clients, broker_url, send_failed
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import Parser, as_nonempty_str, parse_fields
from dynoclock.jsontypes import JSONValue
from dynoclock.observe.timefmt import iso_utc

if TYPE_CHECKING:
    from celery import Celery

JOB_KEYS: tuple[str, ...] = ()
BROKER_VARIABLES = ("CELERY_BROKER_URL", "REDIS_URL")
NO_BROKER = "no broker: set 'broker:' in celery, or CELERY_BROKER_URL / REDIS_URL"
NO_CELERY = "celery: jobs need the celery package: pip install celery"


@dataclass(frozen=True, slots=True)
class CeleryAction:
    task: str
    broker: str | None = None  # None: $CELERY_BROKER_URL, else $REDIS_URL, at run time
    args: tuple[JSONValue, ...] = ()
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    queue: str | None = None

    def run(self, ctx: RunContext) -> str:
        """``send_task`` with a task id derived from (job, slot), so the app can spot a repeat."""
        broker = broker_url(self.broker, os.environ, *BROKER_VARIABLES)
        if not broker:
            raise JobFailed(NO_BROKER)
        import uuid  # here: check and next need not import it (nor platform, which it imports)

        task_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"dynoclock:{ctx.job}:{iso_utc(ctx.scheduled_for)}"))
        try:
            app = _app(broker)
            app.send_task(
                self.task, args=list(self.args), kwargs=self.kwargs, queue=self.queue, task_id=task_id,
                headers={"clock_job": ctx.job, "clock_run_id": ctx.run_id},
            )  # fmt: skip
        except JobFailed:
            raise
        except Exception as exc:
            raise send_failed("send_task", exc) from None
        return f"celery_task={task_id}" + (f" queue={self.queue}" if self.queue else "")

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        """Celery must be installed, and a broker named."""
        if importlib.util.find_spec("celery") is None:
            return NO_CELERY
        return None if broker_url(self.broker, env, *BROKER_VARIABLES) else NO_BROKER


def parse(report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> CeleryAction | None:
    fields = parse_fields(report, path, value, PARSERS, "task", EXAMPLE_TASK)
    return None if fields is None else CeleryAction(**fields)


def as_broker_url(value: object) -> str:
    url = as_nonempty_str(value).strip()
    if "://" not in url:
        raise Invalid("expected a broker URL like redis://localhost:6379/0 or amqp://guest@localhost//")
    return url


_apps: Clients[str, Celery] = Clients()


def _app(broker: str) -> Celery:
    """The Celery app (a client) for ``broker``, made once."""
    try:
        from celery import Celery
    except ImportError:
        raise JobFailed(NO_CELERY) from None

    def make() -> Celery:
        app = Celery("dynoclock", broker=broker)
        app.conf.broker_connection_retry_on_startup = False
        app.conf.broker_connection_timeout = 5
        return app

    return _apps.get(broker, make)


PARSERS: dict[str, Parser] = {
    "task": as_nonempty_str,
    "broker": as_broker_url,
    **TASK_PARSERS,
}
