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
            self._retired[job_id] = (job, self.clock.monotonic())
        self.forget_retired()

    def forget_retired(self) -> None:
        before = self.clock.monotonic() - RETIRED_FOR
        for job_id, (_, since) in list(self._retired.items()):
            if since < before:
                self._retired.pop(job_id, None)
