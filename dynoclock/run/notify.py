"""Telling the tools a team watches: monitoring pings, failure and recovery webhooks, Sentry (errors and Crons).

All of it runs on a small pool of background threads, with short timeouts and
a couple of retries: a slow or dead monitoring service never delays a job and
never fails one.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import urlencode

from dynoclock.observe import sentry_crons
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.observe.timefmt import iso_utc
from dynoclock.state.ledger import Ledger
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    import requests

    from dynoclock.config.loader import Job

PING_TIMEOUT = 5.0
PING_TRIES = 3
START_WAIT = PING_TIMEOUT * PING_TRIES + 5  # how long a run's last ping waits for its start ping to be done
BODY_LIMIT = 10_000  # bytes of output or error sent with a ping (healthchecks.io keeps 100 kB)


class WebhookMessage(TypedDict):
    """What ``on_failure`` and ``on_recovery`` post: Slack's ``text``, and the run's fields for other receivers."""

    text: str
    job: str
    scheduled_for: str
    run_id: str
    attempt: int
    status: str
    reason: str
    duration_ms: int | None


@dataclass(frozen=True)
class RunInfo:
    """What a notification says about a run."""

    job: str
    run_id: str
    scheduled_for: datetime
    attempt: int
    status: str
    error: str = ""
    detail: str = ""
    duration_ms: int | None = None
    output: str = ""  # the run's last output lines


class Notifier:
    def __init__(self, events: EventLog, workers: int = 2, clock: Clock = SYSTEM, ledger: Ledger | None = None):
        self.events = events
        self.clock = clock
        self.ledger = ledger  # where the status of a job's previous run is read after a restart (on_recovery)
        self._last_final: dict[str, str] = {}  # job id -> status of its last finished run in this process
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(maxsize=10_000)
        self._session: requests.Session | None = None  # made at the first delivery: requests loads only if needed
        self._lock = threading.Lock()
        self._starts: dict[str, threading.Event] = {}  # run id -> set once its start ping is done
        self._alerts: dict[str, threading.Event] = {}  # job id -> set once its latest alert is delivered
        self._checkins: dict[str, threading.Event] = {}  # run id -> set once its in_progress check-in is sent
        for i in range(workers):
            threading.Thread(target=self._work, name=f"notify-{i}", daemon=True).start()
        self.sentry = _sentry()

    # ---- what the runner calls ----------------------------------------------------------------

    def run_started(self, ping: str | None, style: str, info: RunInfo, job: Job | None = None) -> None:
        if job is not None and self.sentry is not None:
            sent = threading.Event()
            with self._lock:
                self._checkins[info.run_id] = sent
                while len(self._checkins) > 1_000:  # runs that never finished (interrupted): forget the oldest
                    self._checkins.pop(next(iter(self._checkins))).set()
            self._check_in(job, info, "in_progress", done=sent)
        if ping:
            done = threading.Event()
            with self._lock:
                self._starts[info.run_id] = done
                while len(self._starts) > 1_000:  # runs that never finished (interrupted): forget the oldest
                    self._starts.pop(next(iter(self._starts))).set()
            self._send("ping.start", info, *_ping_request(ping, style, "start", info), done=done)

    def sends_at_start(self, job: Job) -> bool:
        """Whether ``run_started`` may send anything for ``job`` (a start ping, a Sentry check-in)."""
        return bool(job.ping or self.sentry is not None)

    def sends_at_finish(self, job: Job) -> bool:
        """Whether ``run_finished`` may send anything for ``job``; if not, ``note_final`` is all a run's end needs."""
        return bool(job.ping or job.on_failure or job.on_recovery or self.sentry is not None)

    def note_final(self, job_id: str, status: str) -> None:
        """A run's last status, for a recovery alert later (``on_recovery`` added by a reload)."""
        with self._lock:
            self._last_final[job_id] = status

    def run_finished(self, job: Job, info: RunInfo) -> None:
        """After a run's last attempt: ping success/fail, on_failure, on_recovery, Sentry."""
        ok = info.status == "ok"
        with self._lock:
            previous = self._last_final.get(job.id)
            self._last_final[job.id] = info.status
        if previous is None and ok and job.on_recovery:
            previous = self._previous_final(job.id, info.run_id)
        previous_failed = previous in ("failed", "timeout")
        if job.ping:
            with self._lock:
                started = self._starts.pop(info.run_id, None)
            state = "ok" if ok else "fail"
            self._send("ping.finish", info, *_ping_request(job.ping, job.ping_style, state, info), after=started)
        if not ok and job.on_failure:
            self._alert("alert.failure", info, job.on_failure, "failed")
        if ok and previous_failed and job.on_recovery:
            self._alert("alert.recovery", info, job.on_recovery, "recovered")
        if not ok and self.sentry is not None:
            self._put(lambda: self._capture(info))
        if self.sentry is not None:
            with self._lock:
                sent = self._checkins.pop(info.run_id, None)
            self._check_in(job, info, "ok" if ok else "error", after=sent)

    def _check_in(
        self, job: Job, info: RunInfo, status: str, done: threading.Event | None = None,
        after: threading.Event | None = None,
    ) -> None:  # fmt: skip
        """A Sentry Crons check-in, in the background; the end waits for the start's (as a finish ping does)."""
        duration = None if status == "in_progress" else info.duration_ms

        def send() -> None:
            try:
                if after is not None:
                    after.wait(START_WAIT)
                sentry_crons.check_in(job, info.run_id, status, duration)
            finally:
                if done is not None:
                    done.set()

        if not self._put(send) and done is not None:
            done.set()

    def _alert(self, what: str, info: RunInfo, url: str, word: str) -> None:
        """A job's alerts arrive in the order they happened (the recovery after the failure it ends): each waits
        for the delivery of the one before, as a finish ping waits for its start ping."""
        done = threading.Event()
        with self._lock:
            after = self._alerts.get(info.job)
            self._alerts[info.job] = done
        self._send(what, info, "POST", url, None, _slack(word, info), done=done, after=after)

    def flush(self, timeout: float) -> None:
        """Wait (bounded) for queued notifications to be delivered, retries included, e.g. before exit."""
        end = self.clock.monotonic() + timeout
        with self._queue.all_tasks_done:  # unfinished_tasks counts the ones being sent, not only the queued
            while self._queue.unfinished_tasks and self.clock.monotonic() < end:
                self._queue.all_tasks_done.wait(end - self.clock.monotonic())

    def _previous_final(self, job_id: str, run_id: str) -> str | None:
        """The status of the job's run before this one, from the ledger (for on_recovery after a restart)."""
        if self.ledger is None:
            return None
        try:
            for run in self.ledger.history(job_id, limit=10):
                if run.run_id != run_id and run.status in ("ok", "failed", "timeout"):
                    return run.status
        except Exception:
            return None
        return None

    # ---- delivery ------------------------------------------------------------------------------

    def _send(
        self, what: str, info: RunInfo, method: str, url: str, body: bytes | None,
        payload: WebhookMessage | None = None,
        done: threading.Event | None = None, after: threading.Event | None = None,
    ) -> None:  # fmt: skip
        """Deliver in the background; ``after``: wait for that delivery first (a run's start ping, even when
        it is being retried, must arrive before its success or failure ping); ``done``: set when finished."""

        def deliver() -> None:
            try:
                if after is not None:
                    after.wait(START_WAIT)
                self._deliver(what, info, method, url, body, payload)
            finally:
                if done is not None:
                    done.set()

        if not self._put(deliver) and done is not None:
            done.set()

    def _deliver(
        self, what: str, info: RunInfo, method: str, url: str, body: bytes | None, payload: WebhookMessage | None
    ) -> None:
        import requests  # here, not at the top: a clock that sends no pings never loads requests (6 MB, 0.1 s)

        with self._lock:
            if self._session is None:
                self._session = requests.Session()
            session = self._session
        error = ""
        for attempt in range(1, PING_TRIES + 1):
            try:
                response = session.request(
                    method, url, data=body, json=payload, timeout=PING_TIMEOUT, allow_redirects=True
                )
                if response.status_code < 400:
                    return
                error = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                error = short_error(exc)
            if attempt < PING_TRIES:  # no pause after the last try
                self.clock.sleep(0.5 * attempt)
        self.events.emit(f"{what}.failed", level="warning", job=info.job, run_id=info.run_id, error=error)

    def _put(self, task: Callable[[], None]) -> bool:
        try:
            self._queue.put_nowait(task)
            return True
        except queue.Full:
            self.events.emit("notify.dropped", level="warning", note="notification queue full")
            return False

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            with contextlib.suppress(Exception):  # a notification must never take the clock down
                task()
            self._queue.task_done()

    def _capture(self, info: RunInfo) -> None:
        sentry = self.sentry
        assert sentry is not None
        with sentry.new_scope() as scope:
            scope.set_tag("job", info.job)
            scope.set_tag("scheduled_for", iso_utc(info.scheduled_for))
            scope.set_tag("status", info.status)
            scope.set_extra("attempt", info.attempt)
            scope.set_extra("run_id", info.run_id)
            sentry.capture_message(f"{info.job} {info.status}: {info.error}"[:500], level="error")


def _ping_request(url: str, style: str, state: str, info: RunInfo) -> tuple[str, str, bytes | None]:
    """healthchecks.io: ``/start``, the URL itself, ``/fail``, with ``rid``; Cronitor: ``state=run|complete|fail``."""
    body_text = info.error if state == "fail" else (info.output or info.detail)
    body = body_text.encode()[-BODY_LIMIT:] if body_text else None
    if style == "cronitor":
        params = {"state": {"start": "run", "ok": "complete", "fail": "fail"}[state], "series": info.run_id}
        if state == "fail" and info.error:
            params["message"] = info.error[:2000]
        if info.duration_ms is not None and state != "start":
            params["metric"] = f"duration:{info.duration_ms / 1000:.3f}"  # Cronitor's metric=duration:<seconds>
        return "GET", f"{url}{'&' if '?' in url else '?'}{urlencode(params)}", None
    suffix = {"start": "/start", "ok": "", "fail": "/fail"}[state]
    base, _, query = url.partition("?")
    query = "&".join(part for part in (query, urlencode({"rid": _uuid_like(info.run_id)})) if part)
    return "POST", f"{base.rstrip('/')}{suffix}?{query}", body


def _uuid_like(run_id: str) -> str:
    """healthchecks.io wants a UUID as ``rid``; run ids are UUID4 hex."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return run_id


def _slack(what: str, info: RunInfo) -> WebhookMessage:
    """A Slack-compatible message (``text``), with the run's fields for other receivers."""
    when = iso_utc(info.scheduled_for)
    if what == "failed":
        text = f":red_circle: {info.job} {info.status} (slot {when}, attempt {info.attempt}): {info.error}"
    else:
        text = f":large_green_circle: {info.job} recovered (slot {when})"
    return {
        "text": text[:3000],
        "job": info.job,
        "scheduled_for": when,
        "run_id": info.run_id,
        "attempt": info.attempt,
        "status": info.status,
        "reason": info.error,
        "duration_ms": info.duration_ms,
    }


def _sentry() -> ModuleType | None:
    """The sentry_sdk module, initialised, when SENTRY_DSN is set and the optional package is installed."""
    dsn = os.environ.get("SENTRY_DSN")
    if not dsn:
        return None
    try:
        import sentry_sdk
    except ImportError:
        return None
    sentry_sdk.init(dsn=dsn, traces_sample_rate=0)
    return sentry_sdk
