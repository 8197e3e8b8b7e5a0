"""Python job functions for the runtime tests, named in schedules as ``tests.jobs_for_tests:NAME``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dynoclock.actions.base import RunContext
from dynoclock.observe.timefmt import iso_utc

_barriers: dict[str, threading.Barrier] = {}
_gates: dict[str, threading.Event] = {}
_lock = threading.Lock()


def echo_args(*args: Any, **kwargs: Any) -> str:
    """Returns what it was called with, as JSON: the run's detail shows it."""
    return json.dumps({"args": list(args), "kwargs": kwargs}, sort_keys=True)


def describe_run(run: RunContext) -> str:
    """Takes the run's context as ``run`` and reports it."""
    return f"job={run.job} scheduled_for={iso_utc(run.scheduled_for)} run_id={run.run_id} attempt={run.attempt}"


def explode(message: str = "boom") -> None:
    raise ValueError(message)


def exit_interpreter() -> None:
    """A job that calls sys.exit: it must fail the run, not end the clock."""
    sys.exit(3)


def interrupt() -> None:
    raise KeyboardInterrupt("job pressed Ctrl-C")


def leak_env(name: str) -> None:
    """Fails with the value of an environment variable in its message (redaction must hide it)."""
    raise RuntimeError(f"could not use {os.environ.get(name)}")


def spin_forever(marker: str) -> None:
    """A pure-Python loop that never ends on its own; writes ``marker`` when something stops it."""
    n = 0
    try:
        while True:
            n += 1
    finally:
        Path(marker).write_text(f"stopped after {n} iterations")


def hold_first(run: RunContext, marker: str) -> str:
    """The first call (no ``marker`` file yet) runs until its run is cancelled; later calls return at once."""
    path = Path(marker)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return "quick run"
    os.close(fd)
    run.cancelled.wait(60)
    return "held run ended"


def rendezvous(name: str, parties: int = 2) -> str:
    """Returns only once ``parties`` runs are inside it at the same time (fails after 20 s)."""
    with _lock:
        barrier = _barriers.setdefault(name, threading.Barrier(parties, timeout=20))
    barrier.wait()
    return f"met at {name}"


def gate(name: str) -> threading.Event:
    """The gate ``hold`` waits for; a test opens it with ``gate(name).set()``."""
    with _lock:
        return _gates.setdefault(name, threading.Event())


def hold(run: RunContext, name: str) -> str:
    """Runs until the test opens gate ``name`` (or the run is cancelled)."""
    while not gate(name).wait(0.05):
        if run.cancelled.is_set():
            return "cancelled while held"
    return f"released by {name}"


def block_in_c(seconds: float) -> str:
    """Blocks inside C code (time.sleep), where no exception raised in its thread can stop it."""
    time.sleep(seconds)
    return f"slept {seconds}"


def write_pid(path: str, seconds: float = 0) -> str:
    """Writes this process's pid to ``path`` (appending), then sleeps ``seconds``."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return f"pid {os.getpid()}"


def fork_stubborn_child(path: str, then_sleep: float = 0) -> str:
    """Forks a copy that ignores SIGTERM and sleeps forever (its pid appended to ``path``); returns in the parent
    after ``then_sleep`` seconds."""
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    with open(path, "a") as fh:
        fh.write(f"{child}\n")
    time.sleep(then_sleep)
    return f"forked {child}"


def allocate(gigabytes: float) -> str:
    """Allocates (and touches) that much memory."""
    block = bytearray(int(gigabytes * (1 << 30)))
    block[:: 1 << 12] = b"x" * len(range(0, len(block), 1 << 12))
    return f"allocated {len(block)}"


def say(run: RunContext, text: str) -> str:
    """Sends ``text`` as an output line of the run, and returns the pid of the process it ran in."""
    run.output("stdout", text)
    return str(os.getpid())


class CountingApp:
    """What ``make_counting_app`` returns: an app with Flask's ``app_context()``."""

    def app_context(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def make_counting_app() -> CountingApp:
    """An app factory that appends its process's pid to $APP_MADE_LOG each time it is called."""
    with open(os.environ["APP_MADE_LOG"], "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return CountingApp()


def own_row_status(run: RunContext, url: str) -> str:
    """Reports the status its own run's row has in the ledger at ``url`` as the job starts."""
    from dynoclock.state.ledger import Ledger

    rows = [r for r in Ledger(url).history(run.job, limit=1_000) if r.run_id == run.run_id]
    return rows[0].status if rows else "no row"


def fill_state_wal(url: str, pages: int = 1500) -> str:
    """Writes about ``pages`` pages to the clock's own state database through the clock's own state engine (a
    scratch table), and reports, as JSON, that engine's ``wal_autocheckpoint`` and the WAL's pages waiting after
    the commit (what the clock process's state connections do with a WAL past SQLite's checkpoint mark)."""
    from dynoclock.state import engines
    from dynoclock.state.checkpoint import pending_pages

    engine = engines.engine_for(url, state=True)
    with engine.begin() as conn:
        setting = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS scratch (blob BLOB)")
        conn.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO scratch SELECT randomblob(3000) FROM n",
            (pages,),
        )
    return json.dumps({"autocheckpoint": setting, "pending": pending_pages(str(engine.url.database))})
