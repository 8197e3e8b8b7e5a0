"""Slow disk: precision on SQLite when each flush to the disk takes ``--flush-ms`` (default 100 ms).

Every ``fsync``/``fdatasync`` of the clock's processes is delayed by a small shim (C, compiled here with ``cc``,
loaded with ``LD_PRELOAD``), which also writes the instant and length of each flush to a file. This stands in for
a disk whose flushes are slow (a busy or throttled volume); nothing else is slowed. With ``synchronous=NORMAL``
SQLite flushes only in a checkpoint of the WAL; the runs' lateness shows whether a checkpoint stood in a run's
path (its claim or its start write). One ``every: 1s`` job for ``--duration`` seconds, as ``bench.precision``.

    .venv/bin/python -m bench.slowdisk [--duration 600] [--flush-ms 100] [--json FILE]

No target of its own: it shows what a slow flush does to the runs (``late`` counts the runs more than 10 ms late).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import common, precision

LATE_MS = 10.0
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int slowly(const char *name, int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    const char *ms = getenv("SLOW_FLUSH_MS"), *log = getenv("SLOW_FLUSH_LOG");
    long wait = ms ? atol(ms) : 100;
    double start = now();
    struct timespec pause = {wait / 1000, (wait % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    int result = real(fd);
    if (log) {
        FILE *out = fopen(log, "a");
        if (out) { fprintf(out, "%s %.6f %.6f\n", name, start, now() - start); fclose(out); }
    }
    return result;
}

int fsync(int fd) { return slowly("fsync", fd); }
int fdatasync(int fd) { return slowly("fdatasync", fd); }
"""


def build_shim(wd: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench.slowdisk needs a C compiler (cc) to build its flush shim")
    source, library = wd / "slowflush.c", wd / "slowflush.so"
    source.write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], check=True)
    return library


def flushes(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        name, start, took = line.split()
        found.append({"call": name, "at": float(start), "ms": round(float(took) * 1000, 1)})
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine()
    common.print_machine(info)
    with common.workdir(args.keep) as wd:
        shim, log = build_shim(wd), wd / "flushes.txt"
        env = {"LD_PRELOAD": str(shim), "SLOW_FLUSH_MS": str(args.flush_ms), "SLOW_FLUSH_LOG": str(log)}
        print(f"  dynoclock sqlite, each flush {args.flush_ms} ms: {args.duration:g} s ...", flush=True)
        result = precision.run_clock("sqlite", args.duration, wd, args.pg_url, env=env)
        result["flushes"] = flushes(log)
    lateness = result["lateness_ms"]
    result["lateness"] = common.summary(lateness)
    late = sorted(x for x in lateness if x > LATE_MS)
    s = result["lateness"]
    common.print_table(
        f"Precision on SQLite with each flush {args.flush_ms} ms, every 1s for {args.duration:g} s",
        ["subject", "runs", "median ms", "p99 ms", "max ms", f"late > {LATE_MS:g} ms", "flushes"],
        [[result["label"], str(s["n"]), common.fmt(s["median"], 2), common.fmt(s["p99"], 2), common.fmt(s["max"], 2),
          str(len(late)), str(len(result["flushes"]))]],
    )  # fmt: skip
    if late:
        print("late runs (ms): " + ", ".join(f"{x:.1f}" for x in late))
    return common.publish("slowdisk", info, args.json, duration_s=args.duration, flush_ms=args.flush_ms,
                          late_ms=LATE_MS, result=result)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = common.bench_parser("bench.slowdisk", __doc__)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of running after ready (default 600)")
    p.add_argument("--flush-ms", type=int, default=100, help="each fsync/fdatasync delayed this long (default 100)")
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
