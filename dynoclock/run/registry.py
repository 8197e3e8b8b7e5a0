"""The jobs a runner knows: the schedule's (schedule.yaml's, and the app's that the leader holds), and those
retired a while ago (removed, changed, or a one-off handed to its claim) whose runs already claimed still need
them."""

from __future__ import annotations

from dynoclock.config.loader import Job
from dynoclock.timesource import Clock

RETIRED_FOR = 900.0  # seconds a retired job is kept for its runs


class Registry:
    def __init__(self, jobs: dict[str, Job], clock: Clock):
        self.jobs = jobs  # the schedule's own dict: the api jobs and a reload change it in place
        self.clock = clock
        self._retired: dict[str, tuple[Job, float]] = {}  # job id -> (job, monotonic time retired)

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            retired = self._retired.get(job_id)
            job = retired[0] if retired is not None else None
        return job

    def retire(self, job_id: str) -> None:
        """Out of the schedule; its runs already claimed still find it."""
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self._retired.pop(job_id, None)  # to the end: the dict stays in the order of retirement
            self._retired[job_id] = (job, self.clock.monotonic())
        self.forget_retired()

    def forget_retired(self) -> None:
        """The oldest first, up to the first still needed: a retire costs O(1), not a pass over every retired job
        (a burst of 10,000 one-offs retires 10,000 jobs on the timer's thread)."""
        before = self.clock.monotonic() - RETIRED_FOR
        while self._retired:
            job_id, (_, since) = next(iter(self._retired.items()))
            if since >= before:
                return
            del self._retired[job_id]
