"""A tiny Celery app for tests/test_celery.py: its worker runs ``record``, which the clock sends by name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery

app = Celery("tests", broker=os.environ.get("CELERY_TEST_BROKER", "redis://127.0.0.1:6379/14"))
app.conf.update(
    worker_enable_remote_control=False,  # no pidbox keys in the test's Redis database
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="tests.record", bind=True)  # type: ignore[untyped-decorator]
def record(self: Any, path: str, *args: Any, **kwargs: Any) -> None:
    """Write what the worker received (task id, clock headers, arguments) to ``path``, as the proof it ran."""
    request = self.request
    seen = {"id": request.id, "clock_job": request.get("clock_job"), "args": list(args), "kwargs": kwargs}
    Path(path).write_text(json.dumps(seen))
