"""What the status page asks of the clock: run a job now, pause or resume it."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from dynoclock.state.ledger import Ledger
from dynoclock.state.tables import from_db, paused, requests, to_db


class Controls:
    """What the status page asks of the clock: run a job now, pause or resume it."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def request_run(self, job: str, by: str) -> str:
        request_id = uuid.uuid4().hex
        row = {"request_id": request_id, "job": job, "requested_at": to_db(self.ledger.clock.now()), "requested_by": by}
        with self.ledger._tx() as conn:
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

    def pending_requests(self) -> list[dict[str, Any]]:
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(requests).where(requests.c.taken_at.is_(None)))
            return [dict(row._mapping) for row in rows]

    def pause(self, job: str, by: str) -> None:
        stmt = self.ledger._insert(paused).values(job=job, paused_at=to_db(self.ledger.clock.now()), paused_by=by)
        with self.ledger._tx() as conn:
            conn.execute(stmt.on_conflict_do_nothing())

    def resume(self, job: str) -> None:
        with self.ledger._tx() as conn:
            conn.execute(paused.delete().where(paused.c.job == job))

    def paused(self) -> dict[str, tuple[datetime, str]]:
        """Paused jobs: job -> (since, by whom)."""
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(paused))
            return {row.job: (from_db(row.paused_at), row.paused_by) for row in rows}
