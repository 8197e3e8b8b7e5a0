"""``enqueue:`` jobs: put a job on the app's RQ queue, for worker dynos to run."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dynoclock.actions.base import JobFailed, RunContext
from dynoclock.actions.tasks import EXAMPLE_TASK, TASK_PARSERS, Clients, broker_url, send_failed
from dynoclock.config.problems import Invalid, Report
from dynoclock.config.source import Path
from dynoclock.config.values import Parser, as_bool, as_duration, as_mapping, as_nonempty_str, parse_fields
from dynoclock.jsontypes import JSONValue
from dynoclock.observe.redact import redact_url

if TYPE_CHECKING:
    from redis import Redis

JOB_KEYS: tuple[str, ...] = ()
NO_REDIS = "no Redis: set 'redis:' in enqueue, or REDIS_URL"
_FUNC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+")


@dataclass(frozen=True, slots=True)
class EnqueueAction:
    func: str
    queue: str = "default"
    args: tuple[JSONValue, ...] = ()
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    job_timeout: timedelta | None = None
    result_ttl: timedelta | None = None
    meta: dict[str, JSONValue] = field(default_factory=dict)
    redis: str | None = None  # None: $REDIS_URL at run time
    verify: bool = True  # TLS certificate check for rediss:// (Heroku Redis uses self-signed certificates)
    wait: bool = False

    def run(self, ctx: RunContext) -> str:
        """Enqueue on RQ under an id derived from (job, slot): a repeated enqueue of one slot adds nothing."""
        from rq import Queue  # imported here: only enqueue jobs need rq
        from rq.job import Job as RqJob
        from rq.results import Result

        url = broker_url(self.redis, os.environ, "REDIS_URL")
        if not url:
            raise JobFailed(NO_REDIS)
        job_id = rq_job_id(ctx.job, ctx.scheduled_for)
        try:
            conn = _redis(url, self.verify)
            now = ctx.clock.now()
            since = now.replace(microsecond=now.microsecond // 1000 * 1000)  # RQ stamps results to the ms
            existing = RqJob.exists(job_id, connection=conn)
            if existing:
                job = RqJob.fetch(job_id, connection=conn)
                detail = f"rq_job={job_id} already enqueued"
                if self.wait and job.is_failed:  # a retry of this slot: the worker runs it again
                    job.requeue()
                    detail = f"rq_job={job_id} requeued"
            else:
                job = Queue(self.queue, connection=conn).enqueue(
                    self.func,
                    args=self.args,
                    kwargs=self.kwargs,
                    job_id=job_id,
                    job_timeout=int(self.job_timeout.total_seconds()) if self.job_timeout else None,
                    result_ttl=int(self.result_ttl.total_seconds()) if self.result_ttl else None,
                    meta={**self.meta, "clock_job": ctx.job, "clock_run_id": ctx.run_id},
                )
                detail = f"rq_job={job_id} queue={self.queue}"
            if not self.wait:
                return detail
            result = None
            while result is None and ctx.remaining > 0:  # blocks on Redis, a second at a time
                result = job.latest_result(timeout=max(1, min(5, int(ctx.remaining))))
                if result is not None and existing and result.created_at < since:
                    result = None  # the result of an earlier try of this slot: wait for the new one
                    ctx.check()
                    ctx.clock.sleep(0.2)
        except JobFailed:
            raise
        except Exception as exc:  # redis.ConnectionError, TimeoutError, auth: the clock keeps going
            raise send_failed("enqueue", exc) from None
        if result is None:
            ctx.check()
            raise JobFailed(f"wait=true: no result for {job_id}")
        if result.type == Result.Type.SUCCESSFUL:
            return f"{detail} result=ok"
        last = (result.exc_string or "").strip().splitlines()[-1:] or [result.type.name.lower()]
        raise JobFailed(f"wait=true: the worker's job failed: {last[0]}"[:300])

    def environment_problem(self, env: Mapping[str, str]) -> str | None:
        return None if broker_url(self.redis, env, "REDIS_URL") else NO_REDIS


def parse(report: Report, path: Path, value: object, extras: dict[str, tuple[object, Path]]) -> EnqueueAction | None:
    fields = parse_fields(report, path, value, PARSERS, "func", EXAMPLE_TASK)
    return None if fields is None else EnqueueAction(**fields)


def as_func(value: object) -> str:
    text = as_nonempty_str(value).strip()
    if not _FUNC.fullmatch(text):
        raise Invalid(f"expected an import path like {EXAMPLE_TASK}, got {text!r}")
    return text


def as_redis_url(value: object) -> str:
    url = as_nonempty_str(value).strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        shown = redact_url(url) if "://" in url or "@" not in url else "***@" + url.rsplit("@", 1)[1]
        raise Invalid(f"expected a Redis URL like redis://localhost:6379/0 or rediss://..., got {shown!r}")
    return url


def rq_job_id(job: str, slot: datetime) -> str:
    """``clock-<job>-<slot as 20261231T230000000000Z>``: RQ ids allow letters, digits, '_' and '-' only."""
    return f"clock-{job}-{slot.astimezone(UTC).strftime('%Y%m%dT%H%M%S%f')}Z"


_clients: Clients[tuple[str, bool], Redis] = Clients()


def _redis(url: str, verify: bool) -> Redis:
    """One client (with its connection pool) per URL."""
    from redis import Redis

    def make() -> Redis:
        options: dict[str, int | None] = {"socket_connect_timeout": 5, "socket_timeout": 10}
        if url.startswith("rediss://") and not verify:
            options["ssl_cert_reqs"] = None
        return Redis.from_url(url, **options)

    return _clients.get((url, verify), make)


PARSERS: dict[str, Parser] = {
    "func": as_func,
    **TASK_PARSERS,
    "job_timeout": as_duration,
    "result_ttl": as_duration,
    "meta": as_mapping,
    "redis": as_redis_url,
    "verify": as_bool,
    "wait": as_bool,
}
