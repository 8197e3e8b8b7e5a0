"""``enqueue:`` jobs on the machine's real Redis, run by a real ``rq worker --burst`` process."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT, run_cli, tool
from tests.support.redis import RedisSpace, TlsRedis
from tests.support.runner import Harness, now_slot
from tests.support.services import free_port

pytestmark = pytest.mark.redis

Write = Callable[[str], Path]
RQ = tool("rq")


def schedule(job: str, enqueue: str, timeout: str = "20s", redis: str | None = None) -> str:
    """One enqueue job; ``enqueue`` is the YAML flow mapping's inside."""
    return f"""
jobs:
  {job}:
    every: 1h
    timeout: {timeout}
    enqueue: {{{enqueue}{f", redis: '{redis}'" if redis else ""}}}
"""


def rq_id(job: str, slot: datetime) -> str:
    """The RQ job id the clock must derive from (job, slot): written out, not taken from the code under test."""
    return f"clock-{job}-{slot:%Y%m%dT%H%M%S%f}Z"


def burst_worker(url: str, queue: str, name: str) -> subprocess.CompletedProcess[str]:
    """A real worker: it imports tests.rq_tasks from the repo root, runs what is queued, and exits."""
    return subprocess.run(
        [RQ, "worker", "--burst", queue, "-u", url, "--name", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def rq_job(space: RedisSpace, job_id: str) -> Any:
    from rq.job import Job

    return Job.fetch(job_id, connection=space.client)


def queue(space: RedisSpace, name: str) -> Any:
    from rq import Queue

    return Queue(name, connection=space.client)


def test_the_worker_runs_the_enqueued_function_with_its_arguments_and_options(
    write_schedule: Write, redis_space: RedisSpace, tmp_path: Path
) -> None:
    job, q, proof = redis_space.name("export"), redis_space.name("exports"), tmp_path / "ran.json"
    h = Harness.load(
        write_schedule(
            schedule(
                job,
                f"func: tests.rq_tasks.record, queue: {q}, args: ['{proof}', 1, two], kwargs: {{limit: 100}},"
                " job_timeout: 30s, result_ttl: 90s, meta: {team: growth}",
                redis=redis_space.url,
            )
        )
    )
    slot = now_slot()
    outcome = h.run(job, slot)
    expected_id = rq_id(job, slot)
    assert (outcome.status, outcome.detail) == ("ok", f"rq_job={expected_id} queue={q}")
    assert queue(redis_space, q).job_ids == [expected_id]
    [start] = h.captured.of("run.start", job=job)
    queued = rq_job(redis_space, expected_id)
    assert queued.func_name == "tests.rq_tasks.record"
    assert (queued.timeout, queued.result_ttl) == (30, 90)
    assert queued.meta == {"team": "growth", "clock_job": job, "clock_run_id": start["run_id"]}

    worker = burst_worker(redis_space.url, q, redis_space.name("worker"))
    assert worker.returncode == 0, worker.stderr
    assert json.loads(proof.read_text()) == {
        "id": expected_id,
        "args": [1, "two"],
        "kwargs": {"limit": 100},
        "meta": {"team": "growth", "clock_job": job, "clock_run_id": start["run_id"]},
        "timeout": 30,
    }
    assert rq_job(redis_space, expected_id).latest_result().return_value == "recorded 2 args"
    assert queue(redis_space, q).count == 0


def test_a_retried_enqueue_of_the_same_slot_adds_no_second_job(
    write_schedule: Write, redis_space: RedisSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, q = redis_space.name("export"), redis_space.name("exports")
    monkeypatch.setenv("REDIS_URL", redis_space.url)  # read at run time, as on Heroku
    h = Harness.load(write_schedule(schedule(job, f"func: tests.rq_tasks.record, queue: {q}, args: [x]")))
    slot = now_slot()
    first, again = h.run(job, slot), h.run(job, slot)
    assert (first.status, again.status) == ("ok", "ok")
    assert again.detail == f"rq_job={rq_id(job, slot)} already enqueued"
    assert queue(redis_space, q).count == 1
    assert queue(redis_space, q).job_ids == [rq_id(job, slot)]
    # Another slot is another job.
    earlier = slot - timedelta(hours=1)  # a past slot: the runner waits for a future one's start time
    assert h.run(job, earlier).status == "ok"
    assert queue(redis_space, q).job_ids == [rq_id(job, slot), rq_id(job, earlier)]


def run_in_background(h: Harness, job: str, slot: datetime) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        result["outcome"] = h.run(job, slot)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def wait_enqueued(space: RedisSpace, job_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not space.client.exists(f"rq:job:{job_id}"):
        assert time.monotonic() < deadline, f"{job_id} never enqueued"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("func", "status", "detail_or_error"),
    [
        ("record, args: ['{proof}', 7]", "ok", "rq_job={id} queue={q} result=ok"),
        ("explode, args: [said no]", "failed", "wait=true: the worker's job failed: ValueError: said no"),
    ],
    ids=["success", "exception"],
)  # fmt: skip
def test_wait_records_the_outcome_of_the_workers_job(
    write_schedule: Write, redis_space: RedisSpace, tmp_path: Path, func: str, status: str, detail_or_error: str
) -> None:
    job, q, proof = redis_space.name("export"), redis_space.name("exports"), tmp_path / "ran.json"
    spec = f"func: tests.rq_tasks.{func.format(proof=proof)}, queue: {q}, wait: true"
    h = Harness.load(write_schedule(schedule(job, spec, redis=redis_space.url)))
    slot = now_slot()
    thread, result = run_in_background(h, job, slot)
    wait_enqueued(redis_space, rq_id(job, slot))
    assert "outcome" not in result  # still waiting: nothing ran the job yet
    burst_worker(redis_space.url, q, redis_space.name("worker"))
    thread.join(timeout=20)
    outcome = result["outcome"]
    assert outcome.status == status
    text = detail_or_error.format(id=rq_id(job, slot), q=q)
    assert (outcome.detail if status == "ok" else outcome.error) == text
    if status == "ok":
        assert json.loads(proof.read_text())["args"] == [7]
    [final] = h.captured.of(f"run.{status}", job=job)
    assert final.get("detail", final.get("error")) == text


def test_wait_without_a_worker_ends_as_timeout_within_the_timeout(
    write_schedule: Write, redis_space: RedisSpace
) -> None:
    job, q = redis_space.name("export"), redis_space.name("exports")
    h = Harness.load(
        write_schedule(schedule(job, f"func: tests.rq_tasks.record, queue: {q}, wait: true", "2s", redis_space.url))
    )
    outcome = h.run(job)
    assert (outcome.status, outcome.error) == ("timeout", "timeout=2s exceeded")
    assert queue(redis_space, q).count == 1  # still there for a worker that comes later


def test_run_job_uses_redis_url_from_the_environment(
    write_schedule: Write, redis_space: RedisSpace, tmp_path: Path
) -> None:
    job, q = redis_space.name("export"), redis_space.name("exports")
    path = write_schedule(schedule(job, f"func: tests.rq_tasks.record, queue: {q}, args: [x]"))
    env = {"REDIS_URL": redis_space.url, "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
    result = run_cli("run", job, "-c", str(path), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [job_id] = queue(redis_space, q).job_ids
    assert result.stdout.splitlines()[-1] == f"{job}: ok (rq_job={job_id} queue={q})"
    assert job_id.startswith(f"clock-{job}-")


def test_an_unreachable_redis_fails_the_run_quickly_without_its_password(write_schedule: Write) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    h = Harness.load(write_schedule(schedule("export", "func: tests.rq_tasks.record", "20s", url)))
    outcome = h.run("export")
    assert outcome.status == "failed"  # not "timeout": it gave up on its own, well within its 20 s
    assert outcome.error.startswith("enqueue failed: ConnectionError: ")
    assert "hunter2-secret" not in h.captured.stream.getvalue()


# ---- Heroku Redis: rediss:// with a self-signed certificate -------------------------------------------


def test_rediss_with_verify_false_enqueues_on_a_self_signed_server_and_a_worker_runs_it(
    write_schedule: Write, tls_redis: TlsRedis, tmp_path: Path
) -> None:
    import redis

    proof = tmp_path / "ran.json"
    h = Harness.load(
        write_schedule(
            schedule(
                "export", f"func: tests.rq_tasks.record, args: ['{proof}', tls], verify: false", "20s", tls_redis.url
            )
        )
    )
    slot = now_slot()
    outcome = h.run("export", slot)
    assert (outcome.status, outcome.detail) == ("ok", f"rq_job={rq_id('export', slot)} queue=default")
    client = redis.Redis.from_url(tls_redis.url, ssl_cert_reqs=None)
    assert client.lrange("rq:queue:default", 0, -1) == [rq_id("export", slot).encode()]
    # An RQ worker on Heroku reads the same URL with ssl_cert_reqs=none.
    worker = burst_worker(f"{tls_redis.url}?ssl_cert_reqs=none", "default", "tls-worker")
    assert worker.returncode == 0, worker.stderr
    assert json.loads(proof.read_text())["args"] == ["tls"]
    client.close()


def test_rediss_with_verify_left_on_refuses_a_self_signed_certificate(
    write_schedule: Write, tls_redis: TlsRedis
) -> None:
    h = Harness.load(write_schedule(schedule("export", "func: tests.rq_tasks.record", "20s", tls_redis.url)))
    outcome = h.run("export")
    assert outcome.status == "failed"
    assert outcome.error.startswith("enqueue failed: ConnectionError: ")
    assert "certificate verify failed" in outcome.error


def test_wait_with_retries_has_the_worker_run_the_slot_again(
    write_schedule: Write, redis_space: RedisSpace, tmp_path: Path
) -> None:
    job, q, marker = redis_space.name("export"), redis_space.name("exports"), tmp_path / "failed-once"
    spec = f"func: tests.rq_tasks.fail_once, args: ['{marker}'], queue: {q}, wait: true"
    text = schedule(job, spec, redis=redis_space.url).replace(
        "    every: 1h\n", "    every: 1h\n    retries: 1\n    retry_delay: 100ms\n"
    )
    h = Harness.load(write_schedule(text))
    slot = now_slot()
    thread, result = run_in_background(h, job, slot)
    wait_enqueued(redis_space, rq_id(job, slot))
    burst_worker(redis_space.url, q, redis_space.name("worker-1"))  # the first try fails
    deadline = time.monotonic() + 20
    while queue(redis_space, q).count == 0:  # the retry puts the same RQ job back on the queue
        assert time.monotonic() < deadline and "outcome" not in result, result
        time.sleep(0.05)
    burst_worker(redis_space.url, q, redis_space.name("worker-2"))
    thread.join(timeout=20)
    outcome = result["outcome"]
    assert (outcome.status, outcome.attempt) == ("ok", 2), outcome.error
    assert outcome.detail == f"rq_job={rq_id(job, slot)} requeued result=ok"
    [failed] = h.captured.of("run.failed", job=job)
    assert failed["error"] == "wait=true: the worker's job failed: RuntimeError: first try fails"
