"""When a run goes to a worker: at its start time, once its start write is answered.

``Runner.submit`` puts each run in the timer's heap (run/timer.py) until ``BEGIN_AHEAD`` before its start; then
``due`` asks for its start write (``Claims.request_begin``), and the run goes to the worker pool at its start, or
when that write is answered if that comes later. No worker wakes for a run before it can start: in a burst of
1,000, 200 workers woken to wait for the answers and for the time held the thread that writes the starts off the
interpreter lock, and the first run started 20 ms late.

Except for a run with few others starting near it (``EARLY_MAX`` within ``BEGIN_AHEAD``): it goes to its worker
as soon as its start write is answered, and the worker waits for the start on a timer of its own
(``Runner.execute``). Its start is then one thread's wake-up, not the timer's and then the worker's: on a 2-core
VM, that second wake-up came 3 ms late once a minute (a one-second job's worst start of 60), 0.15 ms at the median.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from dynoclock import quiet
from dynoclock.run.claims import BEGIN_AHEAD
from dynoclock.run.inflight import InFlight
from dynoclock.run.timer import Timer
from dynoclock.run.workers import WorkerPool
from dynoclock.state.writer import StartAnswer
from dynoclock.timesource import Clock

Due = Callable[[], bool | StartAnswer]  # called BEGIN_AHEAD before the start: False drops the run
EARLY_MAX = 4  # runs at most waiting in workers for starts BEGIN_AHEAD away; the others go at their starts


class HandOver:
    def __init__(self, inflight: InFlight, pool: WorkerPool, timer: Timer, clock: Clock):
        self.inflight = inflight
        self.pool = pool
        self.timer = timer
        self.clock = clock
        self._lock = threading.Lock()
        self._early: list[float] = []  # the starts (monotonic) of the runs handed over early, until they pass

    def _handed_early(self, start: float) -> bool:
        """Whether a run starting at ``start`` (monotonic) goes to its worker now: if few others do."""
        with self._lock:
            now = self.clock.monotonic()
            early = self._early = [t for t in self._early if t > now]
            if len(early) >= EARLY_MAX:
                return False
            early.append(start)
            return True

    def at(self, task: Callable[[], None], start_at: datetime, due: Due | None = None) -> None:
        """Hand ``task`` to the pool at ``start_at``: until then it waits in the timer's heap, not in a thread.
        ``due``, called BEGIN_AHEAD before (on the timer's thread), may drop it (False), or return the answer to a
        start write: the task then goes to the pool at ``start_at`` or when the answer is in, whichever is later;
        or, for one of at most ``EARLY_MAX`` runs starting within BEGIN_AHEAD, when the answer is in (its worker
        waits for ``start_at``)."""
        inflight, pool, clock = self.inflight, self.pool, self.clock
        inflight.pending()

        def counted() -> None:
            try:
                task()
            finally:
                inflight.done()

        def hand_over() -> None:
            quiet.starting()
            pool.submit(counted)

        def at_start(go: bool | StartAnswer) -> None:
            if isinstance(go, StartAnswer):
                go.then(hand_over)  # now if the answer is in, else from the start writes' thread when it is
            else:
                hand_over()

        def when_due() -> None:
            try:
                go = due is None or due()
            except Exception:  # a bug there must not lose the run: it runs as it would have without ``due``
                go = True
            if go is False:
                inflight.done()
            elif (left := (start_at - clock.now()).total_seconds()) > 0.0005:
                start = clock.monotonic() + left
                if self._handed_early(start):
                    at_start(go)  # its worker waits for the start (Runner.execute)
                else:
                    self.timer.at(start, lambda: at_start(go))
            else:
                at_start(go)

        delay = (start_at - BEGIN_AHEAD - clock.now()).total_seconds()
        if delay > 0.001:
            # A thread for each run in hand (up to ``workers``), started while it waits: a burst claimed LEAD ahead
            # finds its workers up, and a clock with nothing due for years holds no idle threads.
            pool.prestart(inflight.count())
            self.timer.at(clock.monotonic() + delay, when_due)
        else:
            when_due()
