"""The plain baseline of bench/million.py: APScheduler 3.11 ``BackgroundScheduler`` with ``SQLAlchemyJobStore`` on
the same Postgres (a schema of its own), holding the same one-offs (``DateTrigger``, ``bench.recorder:record``).

``load`` writes the jobs' rows as SQLAlchemyJobStore would (id, next_run_time, the pickled job state) with COPY:
setup, not measured (``add_job`` one by one stores a few hundred a second; the rate is bench/runtime.py's).
``serve`` runs the scheduler until SIGTERM: 10 threads (APScheduler's default), ``misfire_grace_time=None`` (no
run dropped however late, as the burst's baseline), and prints ``ready`` once started.

    python -m bench.plain_million serve --url URL
"""

from __future__ import annotations

import argparse
import pickle
import signal
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

TABLE = "apscheduler_jobs"


def _sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def scheduler(url: str) -> object:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    store = SQLAlchemyJobStore(url=_sa_url(url), tablename=TABLE)
    return BackgroundScheduler(jobstores={"default": store}, timezone=UTC, job_defaults={"misfire_grace_time": None})


def load(url: str, items: Iterable[tuple[int, datetime]]) -> int:
    """Rows for ``(n, when)`` one-offs calling ``record(n)``; returns how many. The table is created by the store."""
    import psycopg
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.util import datetime_to_utc_timestamp

    sched = scheduler(url)
    assert isinstance(sched, BackgroundScheduler)
    sched.start(paused=True)  # creates the table
    template = sched.add_job("bench.recorder:record", "date", run_date=datetime(2100, 1, 1, tzinfo=UTC), args=[0],
                             id="template")  # fmt: skip
    state = template.__getstate__()
    template.remove()
    sched.shutdown(wait=False)
    count = 0
    copy_sql = f"COPY {TABLE} (id, next_run_time, job_state) FROM STDIN"
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for n, when in items:
            job_id = f"plain-{n}"
            row = {**state, "id": job_id, "trigger": DateTrigger(when, UTC), "args": (n,), "next_run_time": when}
            copy.write_row((job_id, datetime_to_utc_timestamp(when), pickle.dumps(row, pickle.HIGHEST_PROTOCOL)))
            count += 1
    return count


def serve(url: str) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sched = scheduler(url)
    assert isinstance(sched, BackgroundScheduler)
    sched.start()
    print("ready", flush=True)
    while not stop.wait(1.0):
        pass
    sched.shutdown(wait=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.plain_million", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["serve"])
    p.add_argument("--url", required=True)
    args = p.parse_args()
    serve(args.url)


if __name__ == "__main__":
    main()
