"""Imported at start-up by every Python process that has this folder on PYTHONPATH (``bench.slots`` puts it there
for the clock it starts): as each of the clock's modules in ``TRACED`` is imported, the methods named there are
wrapped so that each call writes a line ``<start, unix s> <duration ms> <thread> <Class.method>`` to
``<BENCH_TRACE>-<pid>.txt``. Never imported by the clock itself; a process without ``BENCH_TRACE`` is left alone."""

import functools
import importlib.util
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


def _patch(out, module) -> None:  # type: ignore[no-untyped-def]
    """Wrap the traced class of ``module`` (methods are looked up at each call, so instances made later see it)."""
    cls_name, names = TRACED[module.__name__]
    cls = getattr(module, cls_name)
    own = vars(cls)
    for name in names or [n for n, v in own.items() if not n.startswith("__") and callable(v)]:
        if callable(own.get(name)) and not isinstance(own[name], type):
            setattr(cls, name, _wrap(out, f"{cls_name}.{name}", own[name]))


class _Finder:
    """On the import of a traced module: the normal import, then its class wrapped (no polling thread)."""

    def __init__(self, out) -> None:  # type: ignore[no-untyped-def]
        self.out = out

    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name not in TRACED:
            return None
        sys.meta_path.remove(self)  # find the real spec without coming back here
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        load, out = spec.loader.exec_module, self.out

        def exec_module(module):  # type: ignore[no-untyped-def]
            load(module)
            _patch(out, module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get("BENCH_TRACE"):
    # One file per process: the supervisor and the clock it starts both have this folder on PYTHONPATH.
    _out = open(f"{os.environ['BENCH_TRACE']}-{os.getpid()}.txt", "w", buffering=1)  # noqa: SIM115
    sys.meta_path.insert(0, _Finder(_out))
