"""The run ledger: one row per (job, scheduled_for), claimed before the run starts.

The unique key on (job, scheduled_for) is what makes a run happen exactly once:
whichever clock inserts the row first runs the slot; every other claim of it
loses. The same tables hold run history, the clocks' heartbeats and the schema
version, in Postgres or SQLite alike (SQLAlchemy Core).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from dynoclock.observe.timefmt import iso_utc
from dynoclock.runid import new_run_id
from dynoclock.state import bulk, totals
from dynoclock.state.database import StateDatabase
from dynoclock.state.lease import Fence
from dynoclock.state.round import LeaderRound
from dynoclock.state.runs import Claim, ClockBeat, LeaseLost, Run, run_of
from dynoclock.state.schema import qualified
from dynoclock.state.tables import (
    UNFINISHED,
    RunReason,
    RunStatus,
    clocks,
    from_db,
    jobs,
    meta,
    runs,
    to_db,
)
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from dynoclock.state.lease import PostgresLease

DEAD_AFTER = timedelta(seconds=20)  # a clock whose heartbeat is older than this is dead: its unfinished runs are closed

# The lease row still names this clock and epoch, unexpired; FOR SHARE keeps a takeover from committing before
# the claim does (Postgres only: on SQLite the lease is a file lock, and claims carry no fence).
_FENCE = (
    "SELECT 1 FROM {lease} WHERE name = 'leader' AND holder = :holder AND epoch = :epoch AND expires_at > now() "
    "FOR SHARE"
)
CATCH_UP_CHUNK = 2000  # jobs a statement: their ids go as one JSON text (bulk.ids_in)


class Ledger(StateDatabase):
    """Claims, outcomes and history of runs, and the clocks' heartbeats, in the state database."""

    def __init__(self, url: str, clock: Clock = SYSTEM, schema: str | None = None):
        super().__init__(url, clock, schema)
        self._fence = sa.text(_FENCE.format(lease=qualified(self.schema, "clock_lease")))
        self._claim_stmt = self._insert(runs).on_conflict_do_nothing().returning(runs.c.run_id)
        self._begin_stmt = _begin_statement()
        self._round = LeaderRound(self)

    # ---- runs ------------------------------------------------------------------------------

    def claim(
        self,
        run_id: str,
        job: str,
        slot: datetime,
        clock: str,
        reason: RunReason = "schedule",
        fence: Fence | None = None,
        version: int | None = None,
        stale: set[str] | None = None,
    ) -> bool:
        """Insert the run's row; False when another claim of (job, slot) got there first (or, ``version`` given,
        the api job's row no longer has it: added to ``stale``)."""
        return run_id in self.claim_many([Claim(run_id, job, slot, clock, reason, version)], fence, stale)

    def claim_many(self, claims: list[Claim], fence: Fence | None = None, stale: set[str] | None = None) -> set[str]:
        """Claim several slots in one transaction (a burst of due jobs); returns the run ids won.

        A row that already carries our run id, is still ``claimed`` and still ours counts as won: the reply to
        an earlier try of this same claim may have been lost with the connection after the insert committed
        (once another clock has reclaimed or closed it, it is no longer ours to run).
        Rows go in sorted by slot: two clocks claiming overlapping bursts then lock them in the same order, and
        one waits for the other instead of both deadlocking.
        A claim with a ``version`` (an api job's) commits only while the job's row is there, not removed, with that
        version (read FOR SHARE on Postgres: a removal or change commits after this claim, or this claim sees it);
        the others are left out and their run ids put in ``stale``.
        """
        if not claims:
            return set()
        now = to_db(self.clock.now())
        with self._tx() as conn:
            versioned = sorted({c.job for c in claims if c.version is not None})
            if versioned:
                claims = self._current(conn, claims, versioned, stale)
            if not claims:
                return set()
            return self._claim_rows(conn, claims, now, fence)

    def _current(self, conn: sa.Connection, claims: list[Claim], ids: list[str], stale: set[str] | None) -> list[Claim]:
        query = sa.select(jobs.c.id, jobs.c.version).where(
            bulk.ids_in(jobs.c.id, ids, conn.dialect), jobs.c.removed_at.is_(None)
        )
        if self.is_postgres:
            query = query.order_by(jobs.c.id).with_for_update(read=True)
        current = {job_id: version for job_id, version in conn.execute(query)}
        keep = [c for c in claims if c.version is None or current.get(c.job) == c.version]
        if stale is not None:
            stale.update(c.run_id for c in claims if c.version is not None and current.get(c.job) != c.version)
        return keep

    def _claim_rows(self, conn: sa.Connection, claims: list[Claim], now: datetime, fence: Fence | None) -> set[str]:
        if fence is not None and (
            fence.epoch is None
            or conn.execute(self._fence, {"holder": fence.holder, "epoch": fence.epoch}).first() is None
        ):
            raise LeaseLost(f"{fence.holder} does not hold the leader lease (epoch {fence.epoch})")
        # RETURNING, not rowcount: psycopg 3 reports -1 for INSERT ... ON CONFLICT through SQLAlchemy.
        if len(claims) >= bulk.MIN_ROWS:  # the rows as one JSON text (state/bulk.py)
            slots = [(c.run_id, c.job, to_db(c.slot), c.clock, c.reason) for c in claims]
            won = bulk.claim(conn, self.schema, slots, now)
        else:  # one statement built once and cached, executed for the rows in (job, slot) order
            rows = [
                {"run_id": c.run_id, "job": c.job, "scheduled_for": to_db(c.slot), "claimed_at": now,
                 "status": "claimed", "attempt": 0, "clock": c.clock, "reason": c.reason}
                for c in sorted(claims, key=lambda c: (c.job, c.slot))
            ]  # fmt: skip
            won = {run_id for (run_id,) in conn.execute(self._claim_stmt, rows)}
        lost = {c.run_id: c.clock for c in claims if c.run_id not in won}
        if lost:
            ours = sa.select(runs.c.run_id, runs.c.clock).where(
                bulk.ids_in(runs.c.run_id, list(lost), conn.dialect), runs.c.status == "claimed"
            )
            won.update(run_id for run_id, clock in conn.execute(ours) if lost[run_id] == clock)
        return won

    def begin(self, starts: list[tuple[str, int, datetime]], clock: str) -> set[str]:
        """Mark claims of this clock started, before their runs start, in one transaction: (run id, attempt, at)
        each; returns the run ids marked. One left out is no longer this clock's claim (another clock took it
        over or closed it while this one could not reach the database): it must not run.

        So a ``claimed`` row of a dead clock surely never started, and the next leader may run it. A row already
        ``running`` from this same start (``started_at`` = ``at``: the reply was lost after the commit) counts."""
        begun: set[str] = set()
        with self._tx() as conn:
            if len(starts) >= bulk.MIN_ROWS:  # one statement for them all (state/bulk.py)
                return bulk.begin(conn, self.schema, [(r, attempt, to_db(at)) for r, attempt, at in starts], clock)
            for run_id, attempt, at in sorted(starts):  # one statement, compiled once, executed per run
                params = {"rid": run_id, "me": clock, "att": attempt, "when": to_db(at)}
                if conn.execute(self._begin_stmt, params).rowcount == 1:
                    begun.add(run_id)
        return begun

    def close_claim(self, run_id: str, clock: str, error: str) -> bool:
        """Record this clock's claim ``missed``: it never started, and will not; False if it is no longer its claim."""
        mine = sa.and_(runs.c.run_id == run_id, runs.c.clock == clock, runs.c.status == "claimed")
        with self._tx() as conn:
            closed = conn.execute(
                runs.update().where(mine).values(status="missed", error=error, finished_at=to_db(self.clock.now()))
            )
            return bool(closed.rowcount == 1)

    def unclaim(self, run_id: str, clock: str | None = None, begun_at: datetime | None = None) -> bool:
        """Delete a claim that never started (the clock is stopping), so the next leader runs the slot; with
        ``clock``, only while the claim is still that clock's. ``begun_at``: the row may also say ``running`` from
        the start write made then, for a run whose action never started (it fell due, and waited for a worker)."""
        unstarted = runs.c.status == "claimed"
        if begun_at is not None:
            begun = sa.and_(runs.c.status == "running", runs.c.attempt == 1, runs.c.started_at == to_db(begun_at))
            unstarted = sa.or_(unstarted, begun)
        stmt = runs.delete().where(runs.c.run_id == run_id, unstarted)
        if clock is not None:
            stmt = stmt.where(runs.c.clock == clock)
        with self._tx() as conn:
            return conn.execute(stmt.returning(runs.c.run_id)).first() is not None

    def record(
        self, job: str, slot: datetime, status: RunStatus, clock: str, error: str, reason: RunReason = "schedule"
    ) -> bool:
        """A slot that did not run (missed, skipped), recorded unless it already has a row."""
        row = {
            "run_id": new_run_id(), "job": job, "scheduled_for": to_db(slot), "claimed_at": to_db(self.clock.now()),
            "finished_at": to_db(self.clock.now()), "status": status, "attempt": 0, "clock": clock, "reason": reason,
            "error": error,
        }  # fmt: skip
        with self._tx() as conn:
            # RETURNING, not rowcount: psycopg 3 reports -1 for INSERT ... ON CONFLICT through SQLAlchemy.
            stmt = self._insert(runs).values(**row).on_conflict_do_nothing().returning(runs.c.run_id)
            inserted = conn.execute(stmt).scalar() is not None
            if inserted:
                totals.add(conn, {(job, f"runs:{status}"): 1}, self.schema)
            return inserted

    def update_runs(self, updates: dict[str, dict[str, object]]) -> None:
        """Apply many row updates (run id -> column values) in one transaction, one statement per shape."""
        shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
        stored: dict[str, dict[str, object]] = {}
        for run_id, values in updates.items():
            row = stored[run_id] = {k: to_db(v) if isinstance(v, datetime) else v for k, v in values.items()}
            shapes.setdefault(tuple(sorted(row)), []).append({"rid": run_id, **row})
        with self._tx() as conn:
            added = totals.finished_increments(conn, stored)
            for columns, rows in shapes.items():
                if len(rows) >= bulk.MIN_ROWS:
                    bulk.update(conn, self.schema, columns, rows)
                    continue
                stmt = runs.update().where(runs.c.run_id == sa.bindparam("rid"))
                conn.execute(stmt.values({c: sa.bindparam(c) for c in columns}), rows)
            totals.add(conn, added, self.schema)

    def last_slots(self) -> dict[str, datetime]:
        """Each job's latest scheduled slot with a row (manual runs do not count)."""
        query = (
            sa.select(runs.c.job, sa.func.max(runs.c.scheduled_for))
            .where(runs.c.reason != "manual")
            .group_by(runs.c.job)
        )
        with self.engine.connect() as conn:
            return {job: from_db(slot) for job, slot in conn.execute(query)}

    def catch_up_slots(self, job: str, since: datetime, until: datetime) -> tuple[datetime | None, list[datetime]]:
        """What a catch-up reads of one job: its latest slot with a row before ``since``, and its slots with a row
        from ``since`` to ``until``, oldest first (manual runs are not slots). Both use the (job, slot) key."""
        return self.catch_up_slots_of({job: since}, until)[job]

    def catch_up_slots_of(
        self, since: dict[str, datetime], until: datetime
    ) -> dict[str, tuple[datetime | None, list[datetime]]]:
        """``catch_up_slots`` of many jobs (job -> its ``since``), a few hundred jobs a statement: a takeover of
        10,000 jobs made 20,000 round trips one job at a time (30 s on Postgres, past the lease's renewal)."""
        out: dict[str, tuple[datetime | None, list[datetime]]] = {}
        groups: dict[datetime, list[str]] = {}
        for job, moment in since.items():
            groups.setdefault(moment, []).append(job)
        slot = runs.c.scheduled_for
        with self.engine.connect() as conn:
            for moment, names in groups.items():
                for i in range(0, len(names), CATCH_UP_CHUNK):
                    chunk = names[i : i + CATCH_UP_CHUNK]
                    # One indexed max per job (a grouped max would read each job's whole history).
                    last = self._lasts_before(conn, chunk, moment)
                    within = (
                        sa.select(runs.c.job, slot)
                        .where(bulk.ids_in(runs.c.job, chunk, conn.dialect), runs.c.reason != "manual")
                        .where(slot >= to_db(moment), slot <= to_db(until))
                        .order_by(slot)
                    )
                    taken: dict[str, list[datetime]] = {}
                    for job, value in conn.execute(within):
                        taken.setdefault(job, []).append(from_db(value))
                    for job in chunk:
                        value = last.get(job)
                        out[job] = (None if value is None else from_db(value)), taken.get(job, [])
        return out

    def _lasts_before(self, conn: sa.Connection, jobs: list[str], moment: datetime) -> dict[str, datetime | None]:
        """Each job's latest (non-manual) slot with a row before ``moment``: on Postgres one statement whose plan
        probes the (job, slot) key once per job (a UNION of a subquery per job took 0.6 s a chunk to plan), the jobs
        a JSON list (a statement per job cost 1.1 s with 10,000 jobs on SQLite; a text[] parameter is escaped one
        element at a time in Python)."""
        if self.is_postgres:
            statement = sa.text(
                f"SELECT j.job, (SELECT max(r.scheduled_for) FROM {qualified(self.schema, 'clock_runs')} r "
                "WHERE r.job = j.job AND r.reason <> 'manual' AND r.scheduled_for < :moment) "
                "FROM json_array_elements_text(CAST(:jobs AS json)) AS j(job)"
            )
            params = {"jobs": json.dumps(jobs), "moment": to_db(moment)}
            return {job: value for job, value in conn.execute(statement, params)}
        slot = runs.c.scheduled_for
        names = sa.func.json_each(sa.bindparam("jobs")).table_valued("value").alias("j")
        last = sa.select(sa.func.max(slot)).where(runs.c.job == names.c.value, runs.c.reason != "manual")
        query = sa.select(names.c.value, last.where(slot < to_db(moment)).scalar_subquery())
        return {job: value for job, value in conn.execute(query, {"jobs": json.dumps(jobs)})}

    def unfinished(self, dead_clocks_before: datetime) -> list[Run]:
        """Runs left claimed/running by clocks whose last heartbeat is older than the given instant (or gone)."""
        alive = sa.select(clocks.c.clock).where(clocks.c.heartbeat_at >= to_db(dead_clocks_before))
        query = sa.select(runs).where(runs.c.status.in_(UNFINISHED), runs.c.clock.not_in(alive))
        with self.engine.connect() as conn:
            return [run_of(row._mapping) for row in conn.execute(query)]

    def reclaim(self, run: Run, clock: str, reason: RunReason = "retry") -> bool:
        """Take over a dead clock's run to run it (again); False if someone else did."""
        with self._tx() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.run_id == run.run_id, runs.c.clock == run.clock, runs.c.status == run.status)
                .values(status="claimed", clock=clock, reason=reason, error=None)
            )
            return bool(result.rowcount == 1)

    def interrupt(self, run: Run, error: str, status: RunStatus = "interrupted") -> bool:
        """Close a dead clock's run (``interrupted``, or ``missed`` if it never started); False if someone else did."""
        with self._tx() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.run_id == run.run_id, runs.c.clock == run.clock, runs.c.status == run.status)
                .values(status=status, error=error, finished_at=to_db(self.clock.now()))
            )
            if result.rowcount == 1:
                totals.add(conn, {(run.job, f"runs:{status}"): 1}, self.schema)
            return bool(result.rowcount == 1)

    def history(self, job: str | None = None, limit: int = 50, offset: int = 0) -> list[Run]:
        query = sa.select(runs).order_by(runs.c.scheduled_for.desc(), runs.c.claimed_at.desc())
        if job is not None:
            query = query.where(runs.c.job == job)
        with self.engine.connect() as conn:
            return [run_of(row._mapping) for row in conn.execute(query.limit(limit).offset(offset))]

    def prune(self, before: datetime, batch: int = 500) -> int:
        """Delete one batch of finished rows older than ``before``; returns how many went."""
        old = (
            sa.select(runs.c.run_id)
            .where(runs.c.scheduled_for < to_db(before), runs.c.status.not_in(UNFINISHED))
            .limit(batch)
        )
        with self._tx() as conn:
            return int(conn.execute(runs.delete().where(runs.c.run_id.in_(old))).rowcount or 0)

    # ---- clocks ----------------------------------------------------------------------------

    def heartbeat(self, clock: str, role: str, started_at: datetime) -> None:
        """This clock is alive; a leader's heartbeat also marks until when some clock led (see ``led_until``)."""
        with self._tx() as conn:
            self._heartbeat(conn, clock, role, started_at)

    def leader_round(self, clock: str, started_at: datetime) -> tuple[set[str], bool, bool]:
        """A leader's periodic round (state/round.py): its heartbeat written; the paused jobs, whether a "run now"
        request waits, whether another clock has a run unfinished."""
        beat = self.leader_round_renewing(clock, started_at, None)
        assert beat is not None
        return beat

    def leader_round_renewing(
        self, clock: str, started_at: datetime, lease: PostgresLease | None
    ) -> tuple[set[str], bool, bool] | None:
        """The same with the Postgres lease renewed by the same statement; None if it was not (nothing written)."""
        return self._round(clock, started_at, lease)

    def checkpoint(self) -> bool:
        """After a leader's round, on SQLite in the clock daemon: the WAL checkpointed if due (state/checkpoint.py)."""
        return self._round.checkpoint()

    def _heartbeat(self, conn: sa.Connection, clock: str, role: str, started_at: datetime) -> None:
        now = to_db(self.clock.now())
        stmt = self._insert(clocks).values(clock=clock, role=role, started_at=to_db(started_at), heartbeat_at=now)
        conn.execute(stmt.on_conflict_do_update(index_elements=["clock"], set_={"role": role, "heartbeat_at": now}))
        if role == "leader":
            self._upsert_meta(conn, "led_until", iso_utc(from_db(now)))

    def led_until(self) -> datetime | None:
        """The last leader heartbeat on this database (None: no clock ever led here). A job with no row
        yet had every slot up to about then covered by a leader, so its catch-up starts there."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "led_until")).scalar()
        return None if value is None else from_db(datetime.fromisoformat(value))

    def forget_clock(self, clock: str) -> None:
        with self._tx() as conn:
            conn.execute(clocks.delete().where(clocks.c.clock == clock))

    def clocks(self) -> list[ClockBeat]:
        """Every clock's last heartbeat, the latest first."""
        with self.engine.connect() as conn:
            c = clocks.c
            rows = conn.execute(
                sa.select(c.clock, c.role, c.started_at, c.heartbeat_at).order_by(c.heartbeat_at.desc())
            )
            return [
                ClockBeat(clock=clock, role=role, started_at=from_db(started), heartbeat_at=from_db(beat))
                for clock, role, started, beat in rows
            ]


def _begin_statement() -> sa.Update:
    """``Ledger.begin``'s update of one run, with its values bound at execution."""
    when = sa.bindparam("when", type_=sa.DateTime)
    again = sa.and_(runs.c.status == "running", runs.c.started_at == when)
    mine = sa.and_(runs.c.run_id == sa.bindparam("rid"), runs.c.clock == sa.bindparam("me"))
    values = {"status": "running", "attempt": sa.bindparam("att"), "started_at": when, "finished_at": None}
    return (
        runs.update()
        .where(mine, sa.or_(runs.c.status == "claimed", again))
        .values(**values, error=None, duration_ms=None)
    )
