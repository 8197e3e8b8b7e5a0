"""``celery:`` jobs: send_task by name to a real Redis broker, run by a real Celery worker (tests/celery_app.py)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from dynoclock.observe.timefmt import iso_utc
from tests.support.processes import ROOT, tool
from tests.support.redis import RedisSpace
from tests.support.runner import Harness, now_slot
from tests.support.services import free_port

pytestmark = pytest.mark.redis

Write = Callable[[str], Path]
CELERY = tool("celery")


def schedule(job: str, celery: str, timeout: str = "20s") -> str:
    return f"""
jobs:
  {job}:
    every: 1h
    timeout: {timeout}
    celery: {{{celery}}}
"""


def task_id(job: str, slot: datetime) -> str:
    """The id the clock must give the task: uuid5 of (job, slot), so the app can spot a repeated send."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dynoclock:{job}:{iso_utc(slot)}"))


def test_a_worker_runs_the_task_sent_by_name_with_the_slots_task_id(
    write_schedule: Write, broker_space: RedisSpace, tmp_path: Path
) -> None:
    job, q, proof = broker_space.name("digest"), broker_space.name("mail"), tmp_path / "ran.json"
    h = Harness.load(
        write_schedule(
            schedule(job, f"task: tests.record, broker: '{broker_space.url}', queue: {q}, "
                          f"args: ['{proof}', 1, two], kwargs: {{limit: 100}}")
        )
    )  # fmt: skip
    slot = now_slot()
    outcome = h.run(job, slot)
    expected = task_id(job, slot)
    assert (outcome.status, outcome.detail) == ("ok", f"celery_task={expected} queue={q}")

    # On the broker: one message in the queue, naming the task, with the slot's id and the clock's headers.
    assert broker_space.client.llen(q) == 1
    message = json.loads(broker_space.client.lindex(q, 0))
    [start] = h.captured.of("run.start", job=job)
    headers = message["headers"]
    assert (headers["task"], headers["id"]) == ("tests.record", expected)
    assert (headers["clock_job"], headers["clock_run_id"]) == (job, start["run_id"])
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([str(proof), 1, "two"], {"limit": 100})

    worker = subprocess.Popen(
        [CELERY, "-A", "tests.celery_app", "worker", "--pool=solo", "-c", "1", "-Q", q, "-l", "warning",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{q}@test"],
        cwd=ROOT, env={**os.environ, "CELERY_TEST_BROKER": broker_space.url},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not proof.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.terminate()  # warm shutdown
        output = worker.communicate(timeout=20)[0].decode()
    assert proof.exists(), output
    assert json.loads(proof.read_text()) == {"id": expected, "clock_job": job, "args": [1, "two"],
                                             "kwargs": {"limit": 100}}  # fmt: skip
    assert broker_space.client.llen(q) == 0


def test_each_send_of_one_slot_carries_the_same_task_id(
    write_schedule: Write, broker_space: RedisSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, q = broker_space.name("digest"), broker_space.name("mail")
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", broker_space.url)  # the broker when neither broker: nor CELERY_BROKER_URL is set
    h = Harness.load(write_schedule(schedule(job, f"task: tests.record, queue: {q}")))
    slot = now_slot()
    assert [h.run(job, slot).status, h.run(job, slot).status] == ["ok", "ok"]
    ids = [json.loads(raw)["headers"]["id"] for raw in broker_space.client.lrange(q, 0, -1)]
    assert ids == [task_id(job, slot)] * 2


def test_an_unreachable_broker_fails_the_run_quickly_without_its_password(write_schedule: Write) -> None:
    broker = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    h = Harness.load(write_schedule(schedule("digest", f"task: tests.record, broker: '{broker}'", timeout="8s")))
    outcome = h.run("digest")
    assert outcome.status == "failed"  # not "timeout": it gave up on its own, well within its 8 s
    assert outcome.error.startswith("send_task failed: OperationalError: ")
    assert "hunter2-secret" not in h.captured.stream.getvalue()
