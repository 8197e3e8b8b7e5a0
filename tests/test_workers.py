"""The runtime's threads: the worker pool, the timer and the watchdog, with real threads and a real RunContext.

Outcomes and order only: every wait is on an event with a generous timeout, never a "took less than" check.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dynoclock.actions.base import HookThreads, RunCancelled, RunContext
from dynoclock.run.timer import Timer
from dynoclock.run.watchdog import STOP_GRACE, Watch, Watchdog
from dynoclock.run.workers import WorkerPool

WAIT = 30.0  # seconds: only ends a hang, never decides a result


def pool_threads(pool: WorkerPool) -> list[threading.Thread]:
    """The pool's live threads (its name is unique to the test, so other pools' threads are not counted)."""
    return [t for t in threading.enumerate() if t.name.startswith(f"{pool.name}-")]


@pytest.fixture
def pool_name() -> str:
    return f"pool-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown too, so no test leaves a worker blocked."""
    event = threading.Event()
    yield event
    event.set()


def blocking(release: threading.Event, started: list[str], lock: threading.Lock) -> Callable[[], None]:
    def task() -> None:
        with lock:
            started.append(threading.current_thread().name)
        release.wait(WAIT)

    return task


def then(*steps: Callable[[], object]) -> Callable[[], None]:
    """One task doing ``steps`` in order."""

    def task() -> None:
        for step in steps:
            step()

    return task


def wait_until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---- WorkerPool -----------------------------------------------------------------------------


def test_pool_runs_every_submitted_task(pool_name: str) -> None:
    pool = WorkerPool(3, pool_name)
    done: list[int] = []
    lock = threading.Lock()
    all_done = threading.Event()
    ran_on: set[str] = set()

    def task(i: int) -> None:
        with lock:
            done.append(i)
            ran_on.add(threading.current_thread().name)
            if len(done) == 500:
                all_done.set()

    for i in range(500):
        pool.submit(functools.partial(task, i))
    assert all_done.wait(WAIT)
    assert sorted(done) == list(range(500))
    assert len(ran_on) <= 3 and all(name.startswith(f"{pool_name}-") for name in ran_on)


def test_pool_grows_only_as_load_needs_and_never_past_its_size(pool_name: str, release: threading.Event) -> None:
    pool = WorkerPool(4, pool_name)
    started: list[str] = []
    lock = threading.Lock()
    assert pool_threads(pool) == []  # no thread before there is work
    for _ in range(2):
        pool.submit(blocking(release, started, lock))
    wait_until(lambda: len(started) == 2, "two tasks running")
    assert len(pool_threads(pool)) == 2  # two busy tasks: two threads, not four
    for _ in range(5):
        pool.submit(blocking(release, started, lock))
    wait_until(lambda: len(started) == 4, "four tasks running")
    assert len(pool_threads(pool)) == 4
    with lock:
        assert len(started) == 4  # the other three wait for a free worker
    release.set()
    wait_until(lambda: len(started) == 7, "every task run")
    assert len(pool_threads(pool)) == 4
    assert len(set(started)) == 4


def test_prestart_starts_idle_workers_up_to_the_size_that_then_run_tasks(
    pool_name: str, release: threading.Event
) -> None:
    pool = WorkerPool(5, pool_name)
    pool.prestart(0)
    pool.prestart(-2)
    assert pool_threads(pool) == []
    pool.prestart(3)
    prestarted = {t.name for t in pool_threads(pool)}
    assert len(prestarted) == 3
    pool.prestart(10)
    assert len(pool_threads(pool)) == 5  # capped at the size
    started: list[str] = []
    lock = threading.Lock()
    for _ in range(6):
        pool.submit(blocking(release, started, lock))
    wait_until(lambda: len(started) == 5, "five tasks running")
    assert len(pool_threads(pool)) == 5  # the prestarted workers took the burst: no sixth thread
    assert prestarted <= set(started)
    release.set()
    wait_until(lambda: len(started) == 6, "the sixth task run")


def test_workers_idle_past_idle_exit_end_and_the_pool_starts_them_again_for_later_tasks(
    pool_name: str, release: threading.Event
) -> None:
    pool = WorkerPool(4, pool_name, idle_exit=0.2)
    started: list[str] = []
    lock = threading.Lock()
    for _ in range(3):
        pool.submit(blocking(release, started, lock))
    wait_until(lambda: len(started) == 3, "three tasks running")
    assert len(pool_threads(pool)) == 3
    release.set()
    wait_until(lambda: not pool_threads(pool), "the idle workers ended")
    later: list[int] = []
    done = threading.Event()

    def task(n: int) -> None:
        with lock:
            later.append(n)
            if len(later) == 6:
                done.set()

    for n in range(6):  # more than the size: the pool grows again, up to it, and runs them all
        pool.submit(functools.partial(task, n))
    assert done.wait(WAIT)
    assert sorted(later) == list(range(6))
    assert len(pool_threads(pool)) <= 4


def test_no_task_is_left_queued_by_a_worker_ending_as_it_is_put(pool_name: str) -> None:
    # A worker ends after 1 ms idle, and a task comes every 0.5-1.5 ms, each waited for: time and again the one
    # worker's wait ends just as the task is put. It must not end when that task counted on it (the pool does not
    # grow for a task an idle worker can take), or the task waits forever.
    pool = WorkerPool(1, pool_name, idle_exit=0.001)
    for n in range(2000):
        ran = threading.Event()
        time.sleep(0.0005 * (1 + n % 3))
        pool.submit(ran.set)
        assert ran.wait(5), f"task {n} was left in the queue"
    wait_until(lambda: not pool_threads(pool), "the worker ended once idle")


def test_a_task_that_raises_does_not_kill_its_worker(pool_name: str) -> None:
    pool = WorkerPool(1, pool_name)
    ran_on: list[str] = []
    after = threading.Event()

    def fails_with(exc: BaseException) -> Callable[[], None]:
        def task() -> None:
            ran_on.append(threading.current_thread().name)
            raise exc

        return task

    def last() -> None:
        ran_on.append(threading.current_thread().name)
        after.set()

    pool.submit(fails_with(ValueError("a job's bug")))
    pool.submit(fails_with(RunCancelled()))  # what the watchdog raises in a job's thread
    pool.submit(last)
    assert after.wait(WAIT)
    assert len(ran_on) == 3 and len(set(ran_on)) == 1  # the one worker ran all three
    assert [t.name for t in pool_threads(pool)] == ran_on[:1]


def test_writing_off_a_stuck_worker_starts_a_replacement_that_runs_later_tasks(
    pool_name: str, release: threading.Event
) -> None:
    pool = WorkerPool(1, pool_name)
    stuck_started = threading.Event()
    stuck: list[threading.Thread] = []
    order: list[str] = []

    def hangs() -> None:
        stuck.append(threading.current_thread())
        stuck_started.set()
        release.wait(WAIT)
        order.append("stuck returned")

    later_done, last_done = threading.Event(), threading.Event()
    pool.submit(hangs)
    assert stuck_started.wait(WAIT)
    pool.submit(then(lambda: order.append("later"), later_done.set))
    assert not later_done.is_set()  # the only worker is stuck: the task waits
    stuck_ident = stuck[0].ident
    assert stuck_ident is not None
    pool.write_off(stuck_ident)
    assert later_done.wait(WAIT)
    pool.submit(then(lambda: order.append("last"), last_done.set))
    assert last_done.wait(WAIT)
    assert stuck[0].is_alive()  # still blocked all along
    release.set()
    stuck[0].join(WAIT)
    assert not stuck[0].is_alive()  # written off: it leaves once its task returns, the replacement stays
    assert order == ["later", "last", "stuck returned"]
    (replacement,) = pool_threads(pool)
    assert replacement is not stuck[0]


def test_writing_off_with_nothing_queued_starts_no_thread_until_a_task_comes(
    pool_name: str, release: threading.Event
) -> None:
    pool = WorkerPool(1, pool_name)
    stuck: list[threading.Thread] = []
    stuck_started = threading.Event()
    pool.submit(then(lambda: stuck.append(threading.current_thread()), stuck_started.set, lambda: release.wait(WAIT)))
    assert stuck_started.wait(WAIT)
    ident = stuck[0].ident
    assert ident is not None
    pool.write_off(ident)
    assert pool_threads(pool) == stuck  # no idle replacement waiting for nothing
    ran_on: list[threading.Thread] = []
    done = threading.Event()
    pool.submit(then(lambda: ran_on.append(threading.current_thread()), done.set))
    assert done.wait(WAIT)
    assert ran_on[0] is not stuck[0]


def test_writing_off_a_thread_that_is_not_a_worker_changes_nothing(pool_name: str, release: threading.Event) -> None:
    pool = WorkerPool(1, pool_name)
    started: list[str] = []
    lock = threading.Lock()
    pool.write_off(threading.get_ident())  # a foreground `run JOB` thread: not the pool's
    pool.submit(blocking(release, started, lock))
    pool.submit(blocking(release, started, lock))
    wait_until(lambda: len(started) == 1, "one task running")
    assert len(pool_threads(pool)) == 1  # the size still holds: no extra worker from the write-off
    release.set()
    wait_until(lambda: len(started) == 2, "both tasks run")


# ---- Timer ----------------------------------------------------------------------------------


def gate(timer: Timer) -> threading.Event:
    """Keep the timer's thread busy in a task until the returned event is set: what is added meanwhile
    is all in the heap when it comes back, whatever the scheduling of the test's own thread."""
    inside, opened = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        opened.wait(WAIT)

    timer.at(time.monotonic(), hold)
    assert inside.wait(WAIT)
    return opened


def test_timer_calls_tasks_in_time_order_not_in_the_order_added() -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    opened = gate(timer)
    called: list[str] = []
    done = threading.Event()
    now = time.monotonic()
    for name, offset in (("d", 0.4), ("b", 0.2), ("c", 0.3), ("a", 0.1), ("b2", 0.2)):
        timer.at(now + offset, functools.partial(called.append, name))
    timer.at(now + 0.5, done.set)
    opened.set()
    assert done.wait(WAIT)
    assert called == ["a", "b", "b2", "c", "d"]  # equal instants keep the order they were added in


def test_an_earlier_task_added_later_runs_before_one_already_waiting() -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    called: list[str] = []
    early = threading.Event()
    timer.at(time.monotonic() + 3600, lambda: called.append("in an hour"))  # the timer now sleeps for an hour
    timer.at(time.monotonic() + 0.05, then(lambda: called.append("soon"), early.set))
    assert early.wait(WAIT)  # it woke for the new, earlier task
    assert called == ["soon"]


def test_a_task_that_raises_does_not_stop_the_timer() -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    opened = gate(timer)
    called: list[str] = []
    done = threading.Event()

    def fails() -> None:
        called.append("fails")
        raise RuntimeError("a task's bug")

    now = time.monotonic()
    timer.at(now, fails)
    timer.at(now + 0.01, lambda: called.append("after"))
    opened.set()
    timer.at(time.monotonic() + 0.05, done.set)  # added after the failure may have happened
    assert done.wait(WAIT)
    assert called == ["fails", "after"]


# ---- Watchdog -------------------------------------------------------------------------------


def context(timeout: float = 0.2) -> RunContext:
    return RunContext("tick", datetime.now(UTC), uuid.uuid4().hex, 1, timedelta(seconds=timeout))


def settle(timer: Timer) -> None:
    """Wait until every escalation step the watchdog scheduled has run (the last one STOP_GRACE after the cancel):
    the timer calls tasks in time order, so a task due after all of them runs after them."""
    after = threading.Event()
    timer.at(time.monotonic() + STOP_GRACE + 0.2, after.set)
    assert after.wait(STOP_GRACE + WAIT), "the watchdog's steps"


def in_thread(body: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_an_attempt_that_returns_in_time_is_never_cancelled() -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    watchdog = Watchdog(timer)
    ctx = context(timeout=0.1)
    hooks: list[str | None] = []
    written_off: list[Watch] = []
    watch = watchdog.watch(ctx, written_off.append)
    ctx.on_cancel(lambda: hooks.append(ctx.cancel_reason))
    assert watch.finish() is True
    settle(timer)  # the deadline passed and its check ran
    assert (ctx.cancelled.is_set(), ctx.cancel_reason, hooks, written_off) == (False, None, [], [])


def test_a_cooperative_action_sees_the_timeout_and_its_cancel_hooks_run() -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    watchdog = Watchdog(timer)
    ctx = context()
    order: list[str] = []
    written_off: list[Watch] = []
    kept: list[bool] = []

    hooks: list[str | None] = []
    hooked = threading.Event()

    def action() -> None:
        watch = watchdog.watch(ctx, written_off.append)
        ctx.on_cancel(then(lambda: hooks.append(ctx.cancel_reason), hooked.set))
        try:
            if ctx.cancelled.wait(WAIT):  # a cooperative action: it watches its context
                order.append("saw cancelled")
        except RunCancelled:
            order.append("RunCancelled")
        kept.append(watch.finish())

    thread = in_thread(action)
    thread.join(WAIT)
    settle(timer)
    assert hooked.wait(WAIT)
    assert order == ["saw cancelled"]  # it stopped itself: no exception was needed
    assert (hooks, ctx.cancel_reason, kept, written_off) == (["timeout"], "timeout", [True], [])


def test_a_busy_python_loop_gets_run_cancelled_raised_in_its_thread() -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    watchdog = Watchdog(timer)
    ctx = context()
    order: list[str] = []
    written_off: list[Watch] = []
    kept: list[bool] = []

    hooks: list[str | None] = []

    def action() -> None:
        watch = watchdog.watch(ctx, written_off.append)
        ctx.on_cancel(lambda: hooks.append(ctx.cancel_reason))
        spins = 0
        try:
            while True:  # pure Python that never looks at its context
                spins += 1
        except RunCancelled:
            order.append(f"RunCancelled (cancelled={ctx.cancelled.is_set()})")
        kept.append(watch.finish())

    thread = in_thread(action)
    thread.join(WAIT)
    assert not thread.is_alive()
    settle(timer)
    assert order == ["RunCancelled (cancelled=True)"]
    assert (hooks, kept, written_off) == (["timeout"], [True], [])  # it stopped within the grace: not written off


def test_a_worker_blocked_in_c_is_written_off_once_and_replaced(release: threading.Event) -> None:
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    watchdog = Watchdog(timer)
    pool = WorkerPool(1, f"pool-{uuid.uuid4().hex[:8]}")
    ctx = context()
    blocked, unblock = socket.socketpair()
    order: list[str] = []
    written_off: list[Watch] = []
    gone = threading.Event()
    kept: list[bool] = []
    finished = threading.Event()

    def on_written_off(watch: Watch) -> None:
        order.append("written off")
        written_off.append(watch)
        pool.write_off(watch.ident)  # as the runner does
        gone.set()

    hooks: list[str | None] = []

    def action() -> None:
        watch = watchdog.watch(ctx, on_written_off)
        ctx.on_cancel(lambda: hooks.append(ctx.cancel_reason))
        try:
            blocked.recv(1)  # blocked in C: neither the hooks nor an exception reach it
            order.append("recv returned")
        except RunCancelled:
            order.append("RunCancelled")
        kept.append(watch.finish())
        finished.set()

    try:
        pool.submit(action)
        assert gone.wait(WAIT)
        assert (order, hooks) == (["written off"], ["timeout"])
        assert written_off[0].written_off and not finished.is_set()
        later = threading.Event()
        pool.submit(later.set)
        assert later.wait(WAIT)  # the replacement worker runs later tasks while the stuck one is still blocked
        assert not finished.is_set()
        unblock.send(b"x")
        assert finished.wait(WAIT)
        settle(timer)
        # The exception sent at STOP_GRACE/2 lands as soon as the thread is back in Python.
        assert order == ["written off", "RunCancelled"]
        assert kept == [False]  # its result must be ignored
        assert len(written_off) == 1
        wait_until(lambda: len(pool_threads(pool)) == 1, "the stuck worker to leave")
    finally:
        blocked.close()
        unblock.close()


# ---- cancel hooks ---------------------------------------------------------------------------


def test_a_cancel_hook_that_blocks_holds_neither_the_timer_nor_the_watchdog(release: threading.Event) -> None:
    """A hook stuck like ``response.close`` on a socket another thread reads from: the timer, which starts every
    run, goes on, and the watchdog still interrupts the attempt."""
    timer = Timer(name=f"timer-{uuid.uuid4().hex[:8]}")
    watchdog = Watchdog(timer)
    ctx = context()
    hooked_on: list[str] = []
    hook_started = threading.Event()
    order: list[str] = []
    written_off: list[Watch] = []
    kept: list[bool] = []

    def stuck_hook() -> None:
        hooked_on.append(threading.current_thread().name)
        hook_started.set()
        release.wait()  # never returns while the test runs

    def action() -> None:
        watch = watchdog.watch(ctx, written_off.append)
        ctx.on_cancel(stuck_hook)
        try:
            while True:  # pure Python: the watchdog's exception stops it
                pass
        except RunCancelled:
            order.append("RunCancelled")
        kept.append(watch.finish())

    thread = in_thread(action)
    assert hook_started.wait(WAIT)
    timer_alive = threading.Event()
    timer.at(time.monotonic(), timer_alive.set)
    assert timer_alive.wait(WAIT)  # the timer runs the next task while the hook is still stuck
    thread.join(WAIT)
    assert not thread.is_alive() and order == ["RunCancelled"]  # the watchdog's steps went on too
    assert (kept, written_off) == ([True], [])
    assert not release.is_set() and hooked_on[0].startswith("cancel-hooks-")  # still stuck, on a thread of its own


def test_cancel_returns_while_its_hook_blocks(release: threading.Event) -> None:
    """Shutdown's drain and ``overlap: replace`` (another run's worker) call cancel: it must not wait for a hook."""
    ctx = context(timeout=60)
    ctx.on_cancel(then(release.wait))
    returned = threading.Event()
    in_thread(then(lambda: ctx.cancel("replaced"), returned.set))
    assert returned.wait(WAIT)
    assert (ctx.cancelled.is_set(), ctx.cancel_reason, release.is_set()) == (True, "replaced", False)


def test_hooks_that_never_return_hold_at_most_the_limit_of_threads(release: threading.Event) -> None:
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    hook_threads = HookThreads(limit=2, name=name)
    started: list[int] = []
    lock = threading.Lock()
    ran = threading.Semaphore(0)

    def hook(i: int) -> None:
        with lock:
            started.append(i)
        release.wait()
        ran.release()

    contexts = [
        RunContext("tick", datetime.now(UTC), uuid.uuid4().hex, 1, timedelta(seconds=60), hook_threads=hook_threads)
        for _ in range(5)
    ]
    for i, ctx in enumerate(contexts):
        ctx.on_cancel(functools.partial(hook, i))
    for ctx in contexts:
        ctx.cancel("shutdown")  # returns at once, every time
    wait_until(lambda: len(started) == 2, "two hooks to start")
    assert hook_threads.threads() == 2
    assert len([t for t in threading.enumerate() if t.name.startswith(f"{name}-")]) == 2
    assert sorted(started) == [0, 1]  # the others wait in the queue, not in threads of their own
    release.set()
    for _ in contexts:
        assert ran.acquire(timeout=WAIT)  # each hook runs once stuck ones return
    assert sorted(started) == [0, 1, 2, 3, 4]
    wait_until(lambda: hook_threads.threads() == 0, "the hook threads to end")
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith(f"{name}-")], "no hook thread left")


def test_a_hook_registered_after_the_cancel_runs_on_a_hook_thread_too(release: threading.Event) -> None:
    ctx = context(timeout=60)
    ctx.cancel("timeout")
    ran_on: list[str] = []
    done = threading.Event()
    ctx.on_cancel(then(lambda: ran_on.append(threading.current_thread().name), done.set, lambda: release.wait(WAIT)))
    assert done.wait(WAIT)  # and on_cancel itself returned while the hook still blocks
    assert ran_on[0].startswith("cancel-hooks-") and not release.is_set()
