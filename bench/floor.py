"""The floor of a burst: threads that do nothing but take a run, note the time and sleep 20 ms.

1,000 runs handed at one instant to ``--workers`` threads waiting on one queue, as the clock's pool does, with
none of the clock's work: what the default 300 workers in waves cost by themselves on this machine (on a 2-core
AMD EPYC, about 0.2x of plain APScheduler's 100 threads at the median and 0.3x at p99; 0.4x with 200 workers), to
read the burst's target against.

    .venv/bin/python -m bench.floor [--workers 300] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time

from dynoclock.config.loader import DEFAULT_WORKERS


def burst(workers: int, jobs: int) -> list[float]:
    """Lateness in ms of each run (its start - the instant)."""
    runs: queue.SimpleQueue[float] = queue.SimpleQueue()
    late: list[float] = []

    def work() -> None:
        while True:
            due = runs.get()
            late.append((time.time() - due) * 1000)
            time.sleep(0.020)

    for _ in range(workers):
        threading.Thread(target=work, daemon=True).start()
    time.sleep(0.5)
    due = time.time() + 0.2
    time.sleep(due - time.time())
    for _ in range(jobs):
        runs.put(due)
    while len(late) < jobs:
        time.sleep(0.005)
    return sorted(late)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.floor", description=__doc__)
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--jobs", type=int, default=1000)
    args = p.parse_args()
    late = burst(args.workers, args.jobs)
    p99 = late[max(0, round(len(late) * 0.99) - 1)]
    print(f"{args.jobs} runs on {args.workers} threads: median {statistics.median(late):.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
