"""The scheduler's job store: APScheduler's MemoryJobStore, which the clock fills at start in one sorted pass.

``BlockingScheduler.add_job`` checks each job's function against its arguments (``inspect.signature``), copies
and validates every option twice (``Job._modify``), then inserts the job by a binary search written in Python:
for 10,000 jobs, about 0.2 s of the clock's start-up before ``clock.ready`` (a plain APScheduler script pays it
too). The schedule's jobs all have the same function, no arguments and the same options, so ``load`` builds each
``Job`` as APScheduler's own persistent stores rebuild one (the attributes ``Job.__setstate__`` sets, and the
scheduler and store alias set after it), and sorts the list once, in the order ``add_job`` keeps it: by next run
time (none last), then by id. Jobs added later (a reload, the app's jobs) go through ``add_job`` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from apscheduler.job import Job as SchedulerJob
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import datetime_to_utc_timestamp, obj_to_ref

ALIAS = "default"
# Every loaded job's kwargs: one empty dict, not one each (0.6 MB for 10,000). Never changed: APScheduler replaces a
# job's kwargs (modify_job), and reads them only to call its function, which the clock's executor never does.
_NO_KWARGS: dict[str, Any] = {}
_LAST = float("inf")


def _order(entry: tuple[SchedulerJob, float | None]) -> tuple[float, str]:
    """MemoryJobStore's order (``_get_job_index``): next run time, none last, then id."""
    job, timestamp = entry
    return (_LAST if timestamp is None else timestamp, job.id)


class SlotStore(MemoryJobStore):  # type: ignore[misc]
    """A MemoryJobStore with ``load``: every other method is APScheduler's."""

    def load(
        self, scheduler: Any, func: Callable[..., Any], jobs: Iterable[tuple[str, BaseTrigger]], now: datetime
    ) -> None:
        """Add ``jobs`` (id, trigger) with their first fire times after ``now``, as ``scheduler.add_job(func,
        trigger=..., id=id, name=id, misfire_grace_time=None, coalesce=False)`` adds them to this store (alias
        ``default``) when the scheduler starts."""
        ref = obj_to_ref(func)
        entries: list[tuple[SchedulerJob, float | None]] = list(self._jobs)  # type: ignore[has-type]
        for job_id, trigger in jobs:
            if job_id in self._jobs_index:
                raise ConflictingIdError(job_id)
            job = SchedulerJob.__new__(SchedulerJob)
            job.id = job.name = job_id
            job.func, job.func_ref = func, ref
            job.trigger, job.executor = trigger, "default"
            job.args, job.kwargs = (), _NO_KWARGS
            job.misfire_grace_time, job.coalesce, job.max_instances = None, False, 1
            job.next_run_time = first = trigger.get_next_fire_time(None, now)
            job._scheduler, job._jobstore_alias = scheduler, ALIAS
            entry = (job, datetime_to_utc_timestamp(first))
            self._jobs_index[job_id] = entry
            entries.append(entry)
        entries.sort(key=_order)
        self._jobs = entries
