"""The scheduler's job store filled in one pass at start (daemon/slotstore.py) holds what add_job would have put
there, in the same order, and the scheduler works on it as on a store filled job by job."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

from dynoclock.daemon.slotstore import SlotStore

NOW = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


class Never(BaseTrigger):  # type: ignore[misc]
    """A trigger with no fire time left (a past one-off): add_job keeps such a job last, paused."""

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        return None


def work() -> None:
    pass


def _triggers() -> list[tuple[str, BaseTrigger]]:
    """Ids in no order, equal fire times (ordered by id), and jobs with none."""
    out: list[tuple[str, BaseTrigger]] = []
    for i, minutes in enumerate([5, 1, 5, 3, 1, 7, 5, 2, 9, 1]):
        out.append((f"job-{(i * 7) % 10}", DateTrigger(NOW + timedelta(minutes=minutes))))
    out += [("z-never", Never()), ("a-never", Never())]
    return out


TRIGGERS = _triggers()  # the same objects in both stores: triggers compare by identity


def triggers() -> list[tuple[str, BaseTrigger]]:
    return list(TRIGGERS)


def by_add_job() -> tuple[BackgroundScheduler, MemoryJobStore]:
    store = MemoryJobStore()
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    for job_id, trigger in triggers():
        scheduler.add_job(work, trigger=trigger, id=job_id, name=job_id, misfire_grace_time=None, coalesce=False)
    scheduler.start(paused=True)
    return scheduler, store


def by_load() -> tuple[BackgroundScheduler, SlotStore]:
    store = SlotStore()
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    store.load(scheduler, work, triggers(), NOW)
    scheduler.start(paused=True)
    return scheduler, store


def contents(scheduler: BackgroundScheduler) -> list[dict[str, object]]:
    """Every job the scheduler lists, in its order, as APScheduler pickles it, with its store."""
    return [job.__getstate__() | {"store": job._jobstore_alias} for job in scheduler.get_jobs()]


def test_load_holds_what_add_job_holds_in_the_same_order() -> None:
    reference, _ = by_add_job()
    loaded, _ = by_load()
    try:
        expected = contents(reference)
        assert [j["id"] for j in expected][:3] == ["job-3", "job-7", "job-8"]  # equal times: by id
        assert [j["id"] for j in expected][-2:] == ["a-never", "z-never"]  # none last, by id
        assert contents(loaded) == expected
        for job in loaded.get_jobs():
            assert job._scheduler is loaded
            assert job.func is work
    finally:
        reference.shutdown(wait=False)
        loaded.shutdown(wait=False)


def test_the_scheduler_changes_a_loaded_store_as_one_filled_by_add_job() -> None:
    """A reload or the app's jobs go through add_job (replacing), remove_job and the due-job reads afterwards."""
    pair = [by_add_job(), by_load()]
    try:
        moved, new = DateTrigger(NOW + timedelta(minutes=4)), DateTrigger(NOW)
        for scheduler, store in pair:
            scheduler.add_job(work, trigger=moved, id="job-1", name="job-1", misfire_grace_time=None,
                              coalesce=False, replace_existing=True)  # fmt: skip
            scheduler.add_job(work, trigger=new, id="new", name="new", misfire_grace_time=None)
            scheduler.remove_job("job-9")
            scheduler.remove_job("a-never")
            due = store.get_due_jobs(NOW + timedelta(minutes=3))
            assert [job.id for job in due] == ["new", "job-3", "job-7", "job-8"]
        assert contents(pair[1][0]) == contents(pair[0][0])
    finally:
        for scheduler, _ in pair:
            scheduler.shutdown(wait=False)


def test_a_loaded_job_fires_through_the_executor() -> None:
    fired = threading.Event()
    store = SlotStore()
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    store.load(scheduler, fired.set, [("soon", DateTrigger(soon))], datetime.now(UTC))
    scheduler.start()
    try:
        assert fired.wait(10)
        assert scheduler.get_job("soon") is None  # a one-off is gone after its run, as with add_job
    finally:
        scheduler.shutdown(wait=False)


def test_a_repeated_id_is_refused_as_add_job_refuses_it() -> None:
    store = SlotStore()
    scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
    with pytest.raises(ConflictingIdError):
        store.load(scheduler, work, [("x", Never()), ("x", Never())], NOW)


def test_loaded_jobs_share_one_empty_kwargs_that_modify_job_replaces_for_one() -> None:
    scheduler, _ = by_load()
    try:
        first, second = scheduler.get_job("job-1"), scheduler.get_job("job-2")
        assert first.kwargs == {} and first.kwargs is second.kwargs  # one dict for every loaded job, not one each
        mine: dict[str, object] = {}
        scheduler.modify_job("job-1", kwargs=mine)  # (work takes no arguments: an empty dict of its own)
        assert scheduler.get_job("job-1").kwargs is mine  # replaced, the shared one untouched
        assert second.kwargs is scheduler.get_job("job-3").kwargs == {}
    finally:
        scheduler.shutdown(wait=False)
