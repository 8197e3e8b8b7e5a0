"""Every write to a run row after its claim goes through the ``RunWriter``.

A run waits for two ledger writes: its claim (run/claims.py), which decides whether
the run happens, and ``begin``, which marks the claim started just before the run
starts (so a row left ``claimed`` by a clock that died or was cut off surely
never ran, and the next leader may run it). What follows is history:
- progress (started, then the outcome) is queued with the instant it happened
  and written in one transaction per batch, from a thread of its own: a burst
  of 1,000 runs costs a handful of commits instead of 2,000. If the database
  is away, the queue waits and retries; at shutdown it is flushed within a bound;
- a slot that will not run (``missed``, ``skipped``) gets a row of its own
  (``not_run``), or, while the database is away, later (``not_run_later``);
- a claim given back at shutdown before its run started is deleted (``release``),
  so the next leader runs the slot;
- a run left behind by a dead clock is closed as ``interrupted`` (``interrupt``).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TypedDict

from sqlalchemy import exc as sa_exc

from dynoclock import quiet
from dynoclock.observe.logs import EventLog, short_error
from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Run
from dynoclock.state.tables import RunReason, RunStatus
from dynoclock.timesource import Clock


class RunUpdate(TypedDict, total=False):
    """Columns of a run's row that one progress update sets (``started``, ``finished``); merged per run
    into the column values ``Ledger.update_runs`` writes."""

    status: RunStatus
    attempt: int
    clock: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    duration_ms: int | None


BATCH_WINDOW = 0.05  # seconds the writer lets updates gather before a commit
MAX_QUEUED = 100_000  # updates kept while the database is away; older ones are dropped (and said so)
MAX_DURATION_MS = 2**31 - 1  # the column is a 32-bit integer: a run over 24.8 days is recorded as that long
# Start writes a batch: a burst's first runs wait for the first transaction, which holds what came by the time it
# started (a batch at most), not for all 1,000 (20 ms on SQLite); the next ones are written while those start.
BEGIN_CHUNK = 100
BEGIN_MERGE = 5  # batches written in one transaction at most
LATER_TRIES = 30  # tries of a row written later, with doubling pauses up to 30 s: about 13 minutes


class _Starts:
    """One batch of start writes (one transaction), and their answers, set at once when it is over."""

    __slots__ = ("after", "begun", "done", "error", "lock", "starts")

    def __init__(self) -> None:
        self.starts: list[tuple[str, int, datetime]] = []  # (run id, attempt, at)
        self.after: list[Callable[[], None]] = []  # called once the answers are in (``StartAnswer.then``)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.begun: set[str] = set()  # the run ids the ledger marked started
        self.error: Exception | None = None  # the database was away

    def answered(self) -> None:
        with self.lock:
            self.done.set()
            after, self.after = self.after, []
        for call in after:
            with contextlib.suppress(Exception):  # a hand-over (WorkerPool.submit) never raises; the thread lives on
                call()


class StartAnswer:
    """One run's answer to its start write (``RunWriter.request_begin``)."""

    __slots__ = ("_batch", "_run_id")

    def __init__(self, batch: _Starts, run_id: str):
        self._batch = batch
        self._run_id = run_id

    def result(self) -> bool:
        """Wait for the answer: True if the ledger shows the run started, False if the claim is no longer this
        clock's; raises what the database raised."""
        batch = self._batch
        if not batch.done.is_set():  # it is, for a run handed over with its answer (run/handover.py)
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return self._run_id in batch.begun

    def then(self, call: Callable[[], None]) -> None:
        """Call ``call`` once the answer is in: now if it is, else from the thread that writes the starts."""
        batch = self._batch
        with batch.lock:
            if not batch.done.is_set():
                batch.after.append(call)
                return
        call()


class RunWriter:
    def __init__(self, ledger: Ledger, events: EventLog, clock: Clock, clock_id: str):
        self.ledger = ledger
        self.events = events
        self.clock = clock
        self.clock_id = clock_id
        self._queue: deque[tuple[str, RunUpdate]] = deque()
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._busy = False
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="run-writer", daemon=True)
        self._thread.start()
        self._batches: deque[_Starts] = deque()  # start writes asked for, up to BEGIN_CHUNK a transaction
        self._starting = threading.Condition()
        threading.Thread(target=self._begin_loop, name="run-begins", daemon=True).start()

    def begin(self, run_id: str, attempt: int, at: datetime) -> bool:
        """Write now, before the run starts, that it starts (``Ledger.begin``); False if the claim is no longer this
        clock's (then it must not run). Raises if the database is away."""
        return self.request_begin(run_id, attempt, at).result()

    def request_begin(self, run_id: str, attempt: int, at: datetime) -> StartAnswer:
        """``begin`` without waiting: its answer comes in the object returned (``result()`` raises if the database is
        away).

        The ``run-begins`` thread writes the starts queued while its last transaction was in flight in the next
        one: runs starting together (a burst of 1,000) cost a few commits, and each caller waits for its answer.
        A batch's answers come together, with one wake-up (a future per run cost a lock and a notify each)."""
        with self._starting:
            batches = self._batches
            if not batches or len(batches[-1].starts) >= BEGIN_CHUNK:
                batches.append(_Starts())
                self._starting.notify()
            batch = batches[-1]
            batch.starts.append((run_id, attempt, at))
            return StartAnswer(batch, run_id)

    def _begin_loop(self) -> None:
        while True:
            with self._starting:
                while not self._batches:
                    self._starting.wait()
                # The oldest batch and the full ones queued behind it (BEGIN_MERGE at most) in one transaction. In a
                # burst the first transaction starts with the first start asked for and holds what came by then;
                # the later ones take several batches: a few commits for a burst, not one per BEGIN_CHUNK.
                batches = [self._batches.popleft()]  # no more starts join these
                while self._batches and len(batches) < BEGIN_MERGE and len(self._batches[0].starts) >= BEGIN_CHUNK:
                    batches.append(self._batches.popleft())
            try:
                begun = self.ledger.begin([start for batch in batches for start in batch.starts], self.clock_id)
            except Exception as exc:
                for batch in batches:
                    batch.error = exc
            else:
                for batch in batches:
                    batch.begun = begun
            for batch in batches:
                batch.answered()

    # ---- progress, batched -------------------------------------------------------------------

    def started(self, run_id: str, attempt: int, at: datetime) -> None:
        self._put(run_id, {"status": "running", "attempt": attempt, "clock": self.clock_id, "started_at": at,
                           "finished_at": None, "error": None, "duration_ms": None})  # fmt: skip

    def finished(
        self, run_id: str, status: RunStatus, error: str | None, duration_ms: int | None, at: datetime
    ) -> None:
        if duration_ms is not None:
            duration_ms = min(duration_ms, MAX_DURATION_MS)
        if error and "\x00" in error:  # a job's output may hold NUL bytes; Postgres text cannot
            error = error.replace("\x00", "\\x00")
        self._put(run_id, {"status": status, "error": error or None, "duration_ms": duration_ms, "finished_at": at})

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is written (or ``timeout`` passes); True if it all was."""
        end = self.clock.monotonic() + timeout
        with self._cond:
            self._wake.set()
            while self._queue or self._busy:
                left = end - self.clock.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # ---- rows of their own -------------------------------------------------------------------

    def not_run(self, job: str, slot: datetime, status: RunStatus, error: str, reason: RunReason = "schedule") -> bool:
        """Record now that a slot did not run (missed, skipped), unless it has a row; raises if the database is away."""
        return self.ledger.record(job, slot, status, self.clock_id, error, reason)

    def not_run_later(self, job: str, slot: datetime, status: RunStatus, error: str) -> None:
        """The same, once the database is back: a bounded number of tries, off every hot path."""
        self._later(lambda: self.not_run(job, slot, status, error), f"record-{job}")

    def missed_later(self, run_id: str, error: str) -> None:
        """Close this clock's claim ``missed`` once the database is back (its run never started, and never will),
        unless another clock took the run over first."""
        self._later(lambda: self.ledger.close_claim(run_id, self.clock_id, error), f"record-{run_id}")

    def _later(self, write: Callable[[], object], name: str) -> None:
        def tries() -> None:
            delay = 1.0
            for _ in range(LATER_TRIES):
                try:
                    write()
                    return
                except Exception:
                    self.clock.sleep(delay)
                    delay = min(delay * 2, 30.0)

        threading.Thread(target=tries, name=name, daemon=True).start()

    def release(self, run_id: str, begun_at: datetime | None = None) -> bool:
        """Give back a claim whose run never started (the clock is stopping); False if it had started. ``begun_at``:
        its start write, made then, is taken back too (the run fell due but no worker took it yet)."""
        return self.ledger.unclaim(run_id, self.clock_id, begun_at)

    def interrupt(self, run: Run, error: str, status: RunStatus = "interrupted") -> bool:
        """Close a run a dead clock left behind; False if another clock closed or took it first."""
        return self.ledger.interrupt(run, error, status)

    # ---- the batching thread -----------------------------------------------------------------

    def _write(self, updates: dict[str, dict[str, object]]) -> None:
        """One transaction for the batch; if the database refuses it (not a lost connection: bad data), each run
        alone, so one row the database will never take does not hold up the history of every other run."""
        try:
            self.ledger.update_runs(updates)
        except Exception as exc:
            if _is_transient(exc):
                raise
            for run_id, values in updates.items():
                try:
                    self.ledger.update_runs({run_id: values})
                except Exception as one:
                    if _is_transient(one):
                        raise
                    self.events.emit("ledger.rejected", level="error", run_id=run_id, error=short_error(one),
                                     note="this update of the run's row was dropped")  # fmt: skip

    def _put(self, run_id: str, values: RunUpdate) -> None:
        # No lock on the runs' path: a deque's append and popleft are atomic. The writer clears ``_wake`` before it
        # takes the queue, so an update that finds it set is taken by the batch about to be.
        queue = self._queue
        queue.append((run_id, values))
        if len(queue) > MAX_QUEUED:
            with contextlib.suppress(IndexError):
                queue.popleft()
            self.events.emit("ledger.dropped", level="warning", note="history queue full; oldest update dropped")
        if not self._wake.is_set():  # wake the writer once per batch, not once per update
            self._wake.set()

    def _loop(self) -> None:
        delay = 0.5
        while True:
            self._wake.wait()
            self.clock.sleep(BATCH_WINDOW)  # let a burst gather: one commit for many runs
            quiet.wait_for_quiet()  # and runs starting go first (dynoclock/quiet.py)
            with self._cond:
                self._wake.clear()
                queue = self._queue
                batch = [queue.popleft() for _ in range(len(queue))]  # updates put meanwhile wait for the next
                self._busy = bool(batch)
            if not batch:
                continue
            try:
                self._write(_merge(batch))
                delay = 0.5
                if self._failing:
                    self._failing = False
                    self.events.emit("ledger.reachable", note="queued history written")
            except Exception as exc:
                with self._cond:
                    self._queue.extendleft(reversed(batch))  # keep order; try again
                    self._wake.set()
                if not self._failing:
                    self._failing = True
                    self.events.emit("ledger.error", level="warning", operation="record", error=short_error(exc),
                                     queued=len(batch), note="history kept in memory and retried")  # fmt: skip
                self.clock.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _is_transient(exc: Exception) -> bool:
    """The database is away or busy (try again), as opposed to refusing this data (trying again cannot help)."""
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError) or not isinstance(
        exc, sa_exc.StatementError
    )


def _merge(batch: list[tuple[str, RunUpdate]]) -> dict[str, dict[str, object]]:
    """One update per run: later values win (started then finished in one batch gives the outcome)."""
    merged: dict[str, dict[str, object]] = {}
    for run_id, values in batch:
        merged.setdefault(run_id, {}).update(values)
    return merged
