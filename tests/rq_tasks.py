"""Functions a real ``rq worker`` runs for tests/test_enqueue.py (it imports them as ``tests.rq_tasks.NAME``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(path: str, *args: Any, **kwargs: Any) -> str:
    """Write what the worker ran (job id, meta, timeout, arguments) to ``path``: the proof that it ran."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    seen = {"id": job.id, "meta": job.meta, "timeout": job.timeout, "args": list(args), "kwargs": kwargs}
    Path(path).write_text(json.dumps(seen, sort_keys=True))
    return f"recorded {len(args)} args"


def explode(message: str) -> None:
    raise ValueError(message)


def fail_once(path: str) -> str:
    """Fails the first time it runs (and leaves ``path`` behind), succeeds after."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("first try fails")
    return "second try"
