"""Prometheus metrics of the clock, read from its ledger: ``/metrics`` of the status page (``ui/app.py``).

The page runs in the web process, not in the clock, so every scrape reads the state database, at most once per
``CACHE_SECONDS``: the counters of ``clock_run_totals`` (one row per job and series, ``state/totals.py``), the
jobs' recent rows (``job_statuses``, each a bounded read of the (job, slot) index), each job's newest ``ok`` row
(the same index, newest first), the lease row and the clocks' heartbeats. Labels are job ids, statuses and clock
ids (redacted): never anything from a job's action.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from dynoclock.observe.redact import redact
from dynoclock.observe.status import job_statuses
from dynoclock.state import totals
from dynoclock.state.ledger import DEAD_AFTER
from dynoclock.state.tables import from_db, lease, runs
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from dynoclock.config.loader import Schedule
    from dynoclock.state.ledger import Ledger

CACHE_SECONDS = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LedgerCollector:
    """A prometheus_client collector: every ``collect`` reads the ledger (the caller caches)."""

    def __init__(self, schedule: Schedule, ledger: Ledger, clock: Clock = SYSTEM):
        self.schedule = schedule
        self.ledger = ledger
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        with self.ledger.engine.connect() as conn:
            counters = totals.read(conn)
            last_ok = {job: _last_ok(conn, job) for job in self.schedule.jobs}
            holder = _lease_holder(conn) if self.ledger.is_postgres else None
        yield from self._runs(counters)
        yield from self._jobs(now, last_ok)
        yield from self._clocks(now, holder)

    def _runs(self, counters: dict[str, dict[str, int]]) -> Iterator[Metric]:
        runs_total = CounterMetricFamily(
            "dynoclock_runs", "Outcomes recorded, per attempt (never lowered by pruning)", labels=["job", "status"]
        )
        duration = HistogramMetricFamily(
            "dynoclock_run_duration_seconds", "How long attempts ran", labels=["job"], unit=""
        )
        lateness = HistogramMetricFamily(
            "dynoclock_run_lateness_seconds", "How long after its slot a run's first attempt started", labels=["job"]
        )
        for job in sorted(set(counters) | set(self.schedule.jobs)):
            series = counters.get(job, {})
            for key, value in sorted(series.items()):
                if key.startswith("runs:"):
                    runs_total.add_metric([job, key[5:]], value)
            duration.add_metric(
                [job], totals.cumulative(series, "duration_le:", totals.DURATION_BUCKETS),
                series.get("duration_sum_ms", 0) / 1000,
            )  # fmt: skip
            lateness.add_metric(
                [job], totals.cumulative(series, "lateness_le:", totals.LATENESS_BUCKETS),
                series.get("lateness_sum_ms", 0) / 1000,
            )  # fmt: skip
        yield from (runs_total, duration, lateness)

    def _jobs(self, now: datetime, last_ok: dict[str, datetime | None]) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "dynoclock_last_success_timestamp_seconds", "When the job's newest ok run finished", labels=["job"]
        )
        upcoming = GaugeMetricFamily("dynoclock_next_run_timestamp_seconds", "The job's next slot", labels=["job"])
        paused = GaugeMetricFamily("dynoclock_job_paused", "1 while the job is paused", labels=["job"])
        failures = GaugeMetricFamily(
            "dynoclock_consecutive_failures", "Failed, timed out, interrupted or missed runs in a row", labels=["job"]
        )
        for status in job_statuses(self.schedule, self.ledger, now):
            job = status.job.id
            if last_ok.get(job) is not None:
                success.add_metric([job], last_ok[job].timestamp())  # type: ignore[union-attr]
            if status.next_run is not None:
                upcoming.add_metric([job], status.next_run.timestamp())
            paused.add_metric([job], 1 if status.paused else 0)
            failures.add_metric([job], status.failures_in_a_row)
        yield from (success, upcoming, paused, failures)

    def _clocks(self, now: datetime, holder: str | None) -> Iterator[Metric]:
        alive = [c for c in self.ledger.clocks() if now - c["heartbeat_at"] <= DEAD_AFTER]
        if holder is None:  # SQLite (a lock file), or no unexpired lease row: the live clock that says it leads
            holder = next((str(c["clock"]) for c in alive if c["role"] == "leader"), None)
        leader = GaugeMetricFamily("dynoclock_leader", "1 for the clock holding the leader lease", labels=["clock"])
        clocks = GaugeMetricFamily("dynoclock_clocks", "Clocks with a recent heartbeat, by role", labels=["role"])
        roles = {"leader": 0, "standby": 0, "stopping": 0}
        for clock in alive:
            name = str(clock["clock"])
            leader.add_metric([redact(name)], 1 if name == holder else 0)
            roles[str(clock["role"])] = roles.get(str(clock["role"]), 0) + 1
        for role, number in roles.items():
            clocks.add_metric([role], number)
        yield from (leader, clocks)


def _last_ok(conn: Connection, job: str) -> datetime | None:
    """The job's newest ok run, found from the newest slot down through the (job, slot) index."""
    query = (
        sa.select(runs.c.finished_at)
        .where(runs.c.job == job, runs.c.status == "ok")
        .order_by(runs.c.scheduled_for.desc())
        .limit(1)
    )
    value = conn.execute(query).scalar()
    return None if value is None else from_db(value)


def _lease_holder(conn: Connection) -> str | None:
    query = sa.select(lease.c.holder).where(lease.c.name == "leader", lease.c.expires_at > sa.func.now())
    value = conn.execute(query).scalar()
    return None if value is None else str(value)


class Metrics:
    """The text of ``/metrics``, made at most once per ``CACHE_SECONDS`` however many scrapers ask."""

    def __init__(self, schedule: Schedule, ledger: Ledger, clock: Clock = SYSTEM, cache: float = CACHE_SECONDS):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LedgerCollector(schedule, ledger, clock))
        self.clock = clock
        self.cache = cache
        self._lock = threading.Lock()
        self._made: tuple[float, bytes] | None = None

    def text(self) -> bytes:
        with self._lock:  # one scrape reads the database; the others at the same moment wait for its text
            now = self.clock.monotonic()
            if self._made is None or now - self._made[0] >= self.cache:
                self._made = (now, generate_latest(self.registry))
            return self._made[1]
