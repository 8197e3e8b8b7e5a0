"""The leader's schedule.yaml jobs as rows of ``clock_jobs`` of origin ``schedule`` (state/jobstore.py), published
at each takeover and reload: the app may pause, resume and run them, never add, change or remove them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from dynoclock.jsontypes import JSONObject
from dynoclock.state import bulk
from dynoclock.state.jobstore import JobStore, row_of, spec_text, unscheduled
from dynoclock.state.tables import jobs

CHUNK = 1000  # ids read, compared and written at a time
T = TypeVar("T")


class Specs(Mapping[str, JSONObject], Generic[T]):
    """Specs by id, each made from its item when it is read: publish_schedule reads them a chunk at a time, and
    10,000 of them at once were 3 MB more at the peak of the clock's start-up."""

    def __init__(self, items: dict[str, T], make: Callable[[T], JSONObject]):
        self._items, self._make = items, make

    def __getitem__(self, key: str) -> JSONObject:
        return self._make(self._items[key])

    def __contains__(self, key: object) -> bool:  # Mapping's would make the spec
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def publish_schedule(store: JobStore, specs: Mapping[str, JSONObject]) -> list[str]:
    """The schedule.yaml jobs (id -> trigger keys) as rows of origin ``schedule``; rows of jobs no longer in it are
    removed. Returns the ids of api jobs these shadowed (schedule.yaml wins).

    One transaction, ``CHUNK`` ids at a time: with 10,000 jobs, every row at once (their specs parsed, then as
    insert parameters) was 12-15 MB at the peak of the clock's start-up."""
    shadowed: list[str] = []
    with store.ledger._tx() as conn:
        seq = store.bump(conn)  # first: what is read next is what every earlier change committed
        live = sa.and_(unscheduled, jobs.c.origin == "schedule", jobs.c.removed_at.is_(None))
        stale = [job_id for (job_id,) in conn.execute(sa.select(jobs.c.id).where(live)) if job_id not in specs]
        for start in range(0, len(stale), CHUNK):
            for row in store.get(conn, stale[start : start + CHUNK]).values():
                store.remove(conn, row, seq)
        ids = list(specs)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            current = {
                row.id: row
                for row in conn.execute(
                    sa.select(jobs).where(bulk.ids_in(jobs.c.id, chunk, store.ledger.engine.dialect))
                )
            }
            new: list[JSONObject] = []
            for job_id in chunk:
                spec = specs[job_id]
                old = current.get(job_id)
                if old is not None and _published(old, spec):
                    continue
                wanted = {"id": job_id, "origin": "schedule", "kind": _kind(spec), "spec": spec, "next_fire_at": None}
                if old is None:
                    new.append(wanted)
                    continue
                if old.origin == "api" and old.removed_at is None:
                    shadowed.append(job_id)
                store.replace(conn, row_of(old), wanted, seq)
            store.insert(conn, new, seq)
    return shadowed


def _published(row: sa.Row[Any], spec: JSONObject) -> bool:
    """Whether ``row`` is a live schedule.yaml row with ``spec`` (its text as spec_text writes it: parsed if not)."""
    if row.origin != "schedule" or row.removed_at is not None or row.spec is None:
        return False
    return bool(row.spec == spec_text(spec) or json.loads(row.spec) == spec)


def _kind(spec: JSONObject) -> str:
    return next(key for key in ("cron", "every", "at") if key in spec)
