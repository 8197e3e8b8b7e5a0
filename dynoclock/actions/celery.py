"""``celery:`` jobs: send a task by name to the app's Celery workers (Celery is an optional extra)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynoclock.actions.base import JobFailed, RunContext
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import as_list, as_mapping, as_nonempty_str, parse_fields
from dynoclock.observe.redact import redact_url
from dynoclock.observe.timefmt import iso_utc

JOB_KEYS: tuple[str, ...] = ()


@dataclass(frozen=True)
class CeleryAction:
    task: str
    broker: str | None = None  # None: $CELERY_BROKER_URL, else $REDIS_URL, at run time
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None

    def run(self, ctx: RunContext) -> str:
        """``send_task`` with a task id derived from (job, slot), so the app can spot a repeat."""
        broker = self.broker or os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL")
        if not broker:
            raise JobFailed("no broker: set 'broker:' in celery, or CELERY_BROKER_URL / REDIS_URL")
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
            raise JobFailed(f"send_task failed: {type(exc).__name__}: {redact_url(str(exc))}"[:300]) from None
        return f"celery_task={task_id}" + (f" queue={self.queue}" if self.queue else "")


def parse(report: Report, path: Path, value: Any, extras: dict[str, tuple[Any, Path]]) -> CeleryAction | None:
    fields = parse_fields(report, path, value, PARSERS, "task", "app.tasks.export_posts")
    if fields is None:
        return None
    if "args" in fields:
        fields["args"] = tuple(fields["args"])
    return CeleryAction(**fields)


def as_broker_url(value: Any) -> str:
    url = as_nonempty_str(value).strip()
    if "://" not in url:
        raise Invalid("expected a broker URL like redis://localhost:6379/0 or amqp://guest@localhost//")
    return url


_apps: dict[str, Any] = {}
_apps_lock = threading.Lock()


def _app(broker: str) -> Any:
    try:
        from celery import Celery
    except ImportError:
        raise JobFailed("celery: jobs need the celery package: pip install celery") from None
    with _apps_lock:
        app = _apps.get(broker)
        if app is None:
            app = _apps[broker] = Celery("dynoclock", broker=broker)
            app.conf.broker_connection_retry_on_startup = False
            app.conf.broker_connection_timeout = 5
        return app


PARSERS: dict[str, Callable[[Any], Any]] = {
    "task": as_nonempty_str,
    "broker": as_broker_url,
    "args": as_list,
    "kwargs": as_mapping,
    "queue": as_nonempty_str,
}
