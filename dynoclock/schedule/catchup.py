"""What to do about slots that passed while no clock was leader: pure, given ``now``.

Within ``misfire_grace`` they run (only the latest unless ``catch_up: all``,
the others recorded ``skipped``); older ones are recorded ``missed``. Nothing
is silently forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dynoclock.config.loader import Job

MAX_RECORDED = 1000  # missed rows written per job per catch-up; older ones are only counted
MAX_SLOTS = 200_000  # a bound on the walk (every: 1s down for two days)


@dataclass
class Plan:
    run: list[datetime] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)  # coalesced into the run
    missed: list[datetime] = field(default_factory=list)  # past misfire_grace
    uncounted: int = 0  # missed slots beyond MAX_RECORDED, only reported
    truncated: bool = False  # the walk hit MAX_SLOTS


def plan(job: Job, last: datetime | None, now: datetime) -> Plan:
    """Slots of ``job`` after ``last`` (its latest slot in the ledger) up to ``now``, sorted into the plan.

    A job with no row yet has no past to catch up: it starts from now.
    """
    result = Plan()
    if last is None:
        return result
    slots: list[datetime] = []
    slot = job.next_after(last)
    while slot is not None and slot <= now:
        slots.append(slot)
        if len(slots) >= MAX_SLOTS:
            result.truncated = True
            break
        slot = job.next_after(slot)
    oldest_runnable = now - job.misfire_grace
    within = [s for s in slots if s >= oldest_runnable]
    older = [s for s in slots if s < oldest_runnable]
    if job.catch_up == "all":
        result.run = within
    else:
        result.run, result.skipped = within[-1:], within[:-1]
    result.missed = older[-MAX_RECORDED:]
    result.uncounted = len(older) - len(result.missed)
    return result
