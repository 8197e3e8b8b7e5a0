"""What the status page asks of the clock: run a job now, pause or resume it."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

import sqlalchemy as sa

from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import from_db, jobs, paused, requests, to_db

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class PendingRequest(TypedDict):
    """A "run now" not yet taken by a clock: its ``clock_requests`` row, times as the database gives them."""

    request_id: str
    job: str
    requested_at: datetime
    requested_by: str
    taken_at: datetime | None
    taken_by: str | None


class UnknownJob(KeyError):
    """No job has this id: not in schedule.yaml (as the leading clock published it), not added from the app."""

    def __init__(self, job: str):
        super().__init__(job)
        self.job = job

    def __str__(self) -> str:
        return f"no job '{self.job}': not in the schedule.yaml the clock runs, nor added from the app"


class Controls:
    """What the status page and the app ask of the clock: run a job now, pause or resume it.

    An unknown id raises UnknownJob: known are the rows of ``clock_jobs`` (the app's jobs, and the leading clock's
    schedule.yaml ids) and the ``known`` ids the caller passes (the page's own schedule.yaml)."""

    def __init__(self, ledger: Ledger, known: Collection[str] = ()):
        self.ledger = ledger
        self.known = known

    def _wake(self, conn: Connection, job: str) -> None:
        """The job must exist; the leader is woken to apply the change within a second (state/jobstore.py)."""
        from dynoclock.state.jobstore import JobStore

        row = conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job, jobs.c.removed_at.is_(None))).first()
        if row is None and job not in self.known:
            raise UnknownJob(job)
        store = JobStore(self.ledger)
        store.touch(conn, job, store.bump(conn))

    def request_run(self, job: str, by: str) -> str:
        request_id = uuid.uuid4().hex
        row = {"request_id": request_id, "job": job, "requested_at": to_db(self.ledger.clock.now()), "requested_by": by}
        with self.ledger._tx() as conn:
            self._wake(conn, job)
            conn.execute(requests.insert().values(**row))
        return request_id

    def take_requests(self, clock: str, jobs: Collection[str]) -> list[tuple[str, str, datetime]]:
        """Pending requests for ``jobs``, each taken by exactly one clock: (request id, job, requested at).

        A request for another job stays pending: during a deploy the leading clock may be the older one, which
        does not know a job the new schedule adds; the clock that knows it takes it when it leads."""
        waiting = sa.select(requests.c.request_id, requests.c.job).where(requests.c.taken_at.is_(None))
        with self.ledger.engine.connect() as conn:
            pending = [request_id for request_id, job in conn.execute(waiting) if job in jobs]
        taken = []
        for request_id in pending:
            with self.ledger._tx() as conn:
                row = conn.execute(
                    requests.update()
                    .where(requests.c.request_id == request_id, requests.c.taken_at.is_(None))
                    .values(taken_at=to_db(self.ledger.clock.now()), taken_by=clock)
                    .returning(requests.c.job, requests.c.requested_at)
                ).first()
            if row is not None:
                taken.append((request_id, row.job, from_db(row.requested_at)))
        return taken

    def pending_requests(self) -> list[PendingRequest]:
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(requests).where(requests.c.taken_at.is_(None)))
            return [
                PendingRequest(
                    request_id=row.request_id,
                    job=row.job,
                    requested_at=row.requested_at,
                    requested_by=row.requested_by,
                    taken_at=row.taken_at,
                    taken_by=row.taken_by,
                )
                for row in rows
            ]

    def pause(self, job: str, by: str) -> None:
        stmt = self.ledger._insert(paused).values(job=job, paused_at=to_db(self.ledger.clock.now()), paused_by=by)
        with self.ledger._tx() as conn:
            self._wake(conn, job)
            conn.execute(stmt.on_conflict_do_nothing())

    def resume(self, job: str) -> None:
        with self.ledger._tx() as conn:
            self._wake(conn, job)
            conn.execute(paused.delete().where(paused.c.job == job))

    def paused(self) -> dict[str, tuple[datetime, str]]:
        """Paused jobs: job -> (since, by whom)."""
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(paused))
            return {row.job: (from_db(row.paused_at), row.paused_by) for row in rows}
