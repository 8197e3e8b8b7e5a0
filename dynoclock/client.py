"""Schedule from the app: ``dynoclock.connect()`` adds, changes and removes jobs at run time, from the web process.

The jobs go to the clock's state database (``clock_jobs``, state/jobstore.py); the leading clock applies each
change within about a second (daemon/apijobs.py) and runs every slot exactly once, as it does schedule.yaml's.
Specs take the keys of a schedule.yaml job, validated by the same code (config/loader.py ``parse_job``), taken
literally (no ``${VAR}``), JSON only. With ``connection=`` the change is written through the app's own
SQLAlchemy connection (or Session): the job exists if and only if the app's transaction commits.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypedDict

from dynoclock.actions import KINDS
from dynoclock.config.loader import TRIGGER_KEYS, Job, parse_job
from dynoclock.config.problems import ConfigError, Problem
from dynoclock.jsontypes import JSONObject, JSONValue
from dynoclock.state.controls import Controls, UnknownJob
from dynoclock.state.jobstore import JobRow, JobStore, spec_text
from dynoclock.state.ledger import Ledger
from dynoclock.state.location import state_url
from dynoclock.timesource import SYSTEM, Clock

if TYPE_CHECKING:
    from typing import TypeAlias

    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    AppConnection: TypeAlias = Connection | Session  # the app's own, in its transaction

__all__ = ["ConfigError", "JobsPage", "ListedJob", "Scheduler", "UnknownJob", "connect"]


class ListedJob(TypedDict):
    """One job as ``Scheduler.jobs`` lists it."""

    id: str
    origin: str  # schedule | api
    kind: str  # cron | every | at
    next: datetime | None  # its next run (UTC); None: a one-off that ran, or a job that no longer parses
    paused: bool
    spec: JSONObject | None  # the app's jobs only: schedule.yaml's specs stay in schedule.yaml


class JobsPage(TypedDict):
    jobs: list[ListedJob]
    after: str | None  # the cursor of the next page; None: this is the last
    rest: int  # pending one-offs after this page


def connect(url: str | None = None, clock: Clock = SYSTEM) -> Scheduler:
    """The clock's state database (``url``, else the clock's own rules: CLOCK_DATABASE_URL, DATABASE_URL, the
    SQLite file), with its tables created or upgraded if needed."""
    return Scheduler(url or state_url(), clock)


class Scheduler:
    """Runtime jobs of one state database; safe to share between the threads of a web process."""

    def __init__(self, url: str, clock: Clock = SYSTEM):
        self.ledger = Ledger(url, clock)
        self.ledger.ensure_schema()
        self.store = JobStore(self.ledger)
        self.controls = Controls(self.ledger)
        self.clock = clock

    # ---- adding and changing -------------------------------------------------------------

    def add(
        self, job_id: str, *, replace: bool = False, connection: AppConnection | None = None, **keys: JSONValue
    ) -> None:
        """A job with the keys of a schedule.yaml job. Adding the same spec again changes nothing; another spec
        under an existing id raises ConfigError unless ``replace=True``."""
        self._put([(job_id, keys)], replace, connection)

    def at(
        self, when: datetime | str, *, key: str | None = None, replace: bool = False,
        connection: AppConnection | None = None, **keys: JSONValue,
    ) -> str:  # fmt: skip
        """A one-off run at ``when`` (an aware datetime; a naive one is UTC); idempotent by ``key`` (its id), else
        under a generated id. Returns the id."""
        job_id = key if key is not None else f"at-{uuid.uuid4().hex[:20]}"
        self._put([(job_id, {"at": _instant(when), **keys})], replace, connection)
        return job_id

    def at_many(
        self,
        items: Iterable[Mapping[str, JSONValue]],
        *,
        replace: bool = False,
        connection: AppConnection | None = None,
    ) -> list[str]:
        """Many one-offs in one transaction: each a mapping with ``when``, optional ``key``, and the job's keys."""
        specs = []
        for item in items:
            keys = dict(item)
            when = keys.pop("when")
            key = keys.pop("key", None)
            specs.append((key if key is not None else f"at-{uuid.uuid4().hex[:20]}", {"at": _instant(when), **keys}))
        self._put(specs, replace, connection)
        return [job_id for job_id, _ in specs]

    def update(self, job_id: str, *, connection: AppConnection | None = None, **changes: JSONValue) -> None:
        """Change some keys of an api job (a key set to None is removed; a new trigger or action replaces the old
        one). Slots after the change commits follow the new spec."""
        with self.store.tx(_conn(connection)) as conn:
            seq = self.store.bump(conn)
            row = self.store.get(conn, [job_id]).get(job_id)
            _own(row, job_id, "update")
            assert row is not None and row.spec is not None
            spec = dict(row.spec)
            for group in (TRIGGER_KEYS, tuple(KINDS)):
                if any(key in changes for key in group):
                    for key in group:
                        spec.pop(key, None)
            if "at" in changes and changes["at"] is not None:
                changes["at"] = _instant(changes["at"])
            spec.update(changes)
            spec = {k: v for k, v in spec.items() if v is not None}
            new = _validated(job_id, spec)
            if spec_text(spec) != spec_text(row.spec):
                self.store.replace(conn, row, new, seq)

    def remove(self, job_id: str, *, connection: AppConnection | None = None) -> None:
        """No run of the job starts after the removal commits; its history stays."""
        with self.store.tx(_conn(connection)) as conn:
            seq = self.store.bump(conn)
            row = self.store.get(conn, [job_id]).get(job_id)
            _own(row, job_id, "remove")
            assert row is not None
            self.store.remove(conn, row, seq)

    def _put(self, specs: list[tuple[str, JSONObject]], replace: bool, connection: AppConnection | None) -> None:
        rows = {job_id: _validated(job_id, spec) for job_id, spec in specs}  # every spec checked before any write
        with self.store.tx(_conn(connection)) as conn:
            # The counter first (in the same statement as the insert of the ids that have no row): its lock orders
            # this change after every other one, and what is read next is what they committed (an add that is no
            # change still raises the counter; the leader then finds nothing).
            seq, inserted = self.store.add(conn, list(rows.values()))
            others = [job_id for job_id in rows if job_id not in inserted]
            if not others:
                return
            existing = self.store.get(conn, others)
            try:
                new, changed = _compare(others, rows, existing, replace)
            except ConfigError:
                self.store.drop_new(conn, inserted)  # the app's transaction keeps nothing of a refused call
                raise
            self.store.insert(conn, new, seq)  # rows pruned since the insert was tried
            for old, row in changed:
                self.store.replace(conn, old, row, seq)

    # ---- controls and listing ------------------------------------------------------------

    def pause(self, job_id: str, by: str = "app") -> None:
        self.controls.pause(job_id, by)

    def resume(self, job_id: str) -> None:
        self.controls.resume(job_id)

    def run_now(self, job_id: str, by: str = "app") -> str:
        """Ask the leading clock to run the job now (reason ``manual``); returns the request id."""
        return self.controls.request_run(job_id, by)

    def jobs(self, limit: int = 200, after: str | None = None) -> list[ListedJob]:
        """The jobs of ``page(limit, after)``: schedule.yaml's (as the leading clock published them) and the app's
        recurring ones, then at most ``limit`` pending one-offs, soonest first; each with id, origin, kind, next
        run (UTC), paused and (the app's) spec."""
        return self.page(limit, after)["jobs"]

    def page(self, limit: int = 200, after: str | None = None) -> JobsPage:
        """One page of the job list. The first (``after`` None) holds every recurring job, then the first ``limit``
        pending one-offs; ``after`` (the cursor a page returned) gives the next one-offs only. ``rest``: how many
        pending one-offs come after this page; ``after`` of the result: the cursor of the next page, or None."""
        if limit < 1:
            raise ValueError("limit: at least 1")
        cursor = _cursor(after) if after is not None else None
        paused = self.controls.paused()
        rows, rest = self.store.page(limit, cursor)
        if cursor is None:
            rows = self.store.recurring() + rows
        last = rows[-1] if rows and rows[-1].kind == "at" and rows[-1].next_fire_at is not None else None
        # URL-safe as it is (no '+'): the API's ?after= takes it without escaping.
        following = (
            f"{last.next_fire_at:%Y-%m-%dT%H:%M:%S.%f}Z,{last.id}" if last and last.next_fire_at and rest else None
        )
        return {"jobs": [self._listed(row, paused) for row in rows], "after": following, "rest": rest}

    def job(self, job_id: str) -> ListedJob:
        """One job as ``jobs()`` lists it (a one-off that ran: ``next`` None); UnknownJob if there is none."""
        with self.ledger.engine.connect() as conn:
            row = self.store.get(conn, [job_id]).get(job_id)
        if row is None or row.removed:
            raise UnknownJob(job_id)
        return self._listed(row, self.controls.paused())

    def _listed(self, row: JobRow, paused: Mapping[str, object]) -> ListedJob:
        job = job_of(row)
        nxt = row.next_fire_at if row.kind == "at" else (job.next_after(self.clock.now()) if job is not None else None)
        return {"id": row.id, "origin": row.origin, "kind": row.kind, "next": nxt, "paused": row.id in paused,
                "spec": row.spec if row.origin == "api" else None}  # fmt: skip


def job_of(row: JobRow) -> Job | None:
    """The row's job (an api job with its version; a schedule row's trigger only), or None if it no longer parses
    (a row written by a newer version)."""
    if row.spec is None:
        return None
    spec = row.spec if row.origin == "api" else {**row.spec, "command": "true"}
    try:
        job = parse_job(row.id, spec)
    except ConfigError:
        return None
    return dataclasses.replace(job, version=row.version, origin=row.origin)


def _compare(
    ids: list[str], rows: Mapping[str, JSONObject], existing: Mapping[str, JobRow], replace: bool
) -> tuple[list[JSONObject], list[tuple[JobRow, JSONObject]]]:
    """Of specs whose id had a row: those to insert (gone since), and those that replace a row; raises ConfigError
    for a schedule.yaml id, or another spec under a live id without ``replace``."""
    new, changed = [], []
    for job_id in ids:
        row, old = rows[job_id], existing.get(job_id)
        if old is None:
            new.append(row)
            continue
        if old.origin == "schedule" and not old.removed:
            raise _schedule_job(job_id, "add")
        if old.removed or replace:
            if old.removed or spec_text(row["spec"]) != spec_text(old.spec or {}):
                changed.append((old, row))
        elif spec_text(row["spec"]) != spec_text(old.spec or {}):
            raise ConfigError([Problem("", None, f"jobs.{job_id}",
                                       "a job with this id exists with another spec; pass replace=True to "
                                       "replace it")])  # fmt: skip
    return new, changed


def _validated(job_id: str, spec: JSONObject) -> JSONObject:
    """The row to write for a spec: validated (ConfigError naming each key path), JSON only."""
    _check_json(spec, f"jobs.{job_id}")
    job = parse_job(job_id, spec)
    next_fire_at = job.next_after(datetime(1000, 1, 1, tzinfo=UTC)) if job.trigger_key == "at" else None
    return {"id": job_id, "origin": "api", "kind": job.trigger_key, "spec": spec, "next_fire_at": next_fire_at}


def _check_json(value: object, path: str) -> None:
    """Arguments are stored as JSON (never pickled): anything else is refused here, by key path."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError([Problem("", None, path, f"keys must be strings (JSON), got {key!r}")])
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{path}.{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError([Problem("", None, path, f"{value} is not JSON")])
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ConfigError([Problem("", None, path, f"expected JSON data (text, numbers, true/false, null, lists, "
                                                   f"mappings), got a {type(value).__name__}")])  # fmt: skip


def _cursor(text: str) -> tuple[datetime, str]:
    """A page's ``after``: the next fire time and id of the last one-off listed."""
    at, _, job_id = text.partition(",")
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or not job_id:
        raise ValueError(f"after: {text[:80]!r} is not a cursor of this list")
    return moment, job_id


def _instant(when: datetime | str) -> str:
    if isinstance(when, datetime):
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return when


def _own(row: JobRow | None, job_id: str, verb: str) -> None:
    if row is None or row.removed:
        raise UnknownJob(job_id)
    if row.origin == "schedule":
        raise _schedule_job(job_id, verb)


def _schedule_job(job_id: str, verb: str) -> ConfigError:
    return ConfigError(
        [
            Problem(
                "",
                None,
                f"jobs.{job_id}",
                f"cannot {verb} a schedule.yaml job from the app; "
                "change schedule.yaml (pause, resume and run_now work)",
            )
        ]
    )


def _conn(connection: AppConnection | None) -> Connection | None:
    """A Session's connection (in its transaction), or the Connection as given."""
    if connection is None:
        return None
    from sqlalchemy.orm import Session

    return connection.connection() if isinstance(connection, Session) else connection
