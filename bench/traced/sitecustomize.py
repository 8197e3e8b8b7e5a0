"""Imported at start-up by every Python process that has this folder on PYTHONPATH (``bench.slots`` puts it there
for the clock it starts): once the clock's modules are imported, the methods named in ``TRACED`` are wrapped so
that each call writes a line ``<start, unix s> <duration ms> <thread> <Class.method>`` to the file named by
``BENCH_TRACE``. Never imported by the clock itself; a process without ``BENCH_TRACE`` is left alone."""

import functools
import os
import sys
import threading
import time

# module -> (class, its methods; None: every method it defines)
TRACED = {
    "dynoclock.state.ledger": ("Ledger", None),
    "dynoclock.state.writer": ("RunWriter", ("_write",)),
    "dynoclock.run.runner": ("Runner", ("execute", "_attempts")),
    "dynoclock.run.workers": ("WorkerPool", ("submit", "prestart")),
    "dynoclock.daemon.leadership": ("Leadership", ("_step", "_beat")),
    "dynoclock.daemon.apijobs": ("ApiJobs", ("apply_changes", "slide", "_poll", "_drain")),
    "dynoclock.state.changes": ("Counter", ("read", "read_settled")),
    "dynoclock.daemon.dispatch": ("Dispatcher", ("dispatch",)),
    "dynoclock.daemon.housekeeping": ("Housekeeping", None),
}


def _wrap(out, name, fn):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    def traced(*args, **kwargs):  # type: ignore[no-untyped-def]
        began = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            took = (time.time() - began) * 1000
            out.write(f"{began:.6f} {took:.3f} {threading.current_thread().name} {name}\n")

    return traced


def _patch(out) -> None:  # type: ignore[no-untyped-def]
    """Wrap each class as soon as its module is imported (methods are looked up at each call)."""
    done: set[str] = set()
    deadline = time.monotonic() + 120
    while len(done) < len(TRACED) and time.monotonic() < deadline:
        for module, (cls_name, names) in TRACED.items():
            cls = getattr(sys.modules.get(module), cls_name, None)
            if module in done or cls is None:
                continue
            own = vars(cls)
            for name in names or [n for n, v in own.items() if not n.startswith("__") and callable(v)]:
                if callable(own.get(name)) and not isinstance(own[name], type):
                    setattr(cls, name, _wrap(out, f"{cls_name}.{name}", own[name]))
            done.add(module)
        time.sleep(0.002)


if os.environ.get("BENCH_TRACE"):
    # One file per process: the supervisor and the clock it starts both have this folder on PYTHONPATH.
    _out = open(f"{os.environ['BENCH_TRACE']}-{os.getpid()}.txt", "w", buffering=1)  # noqa: SIM115
    threading.Thread(target=_patch, args=(_out,), name="bench-trace", daemon=True).start()
