"""Runs every benchmark and writes bench/results.json (``--quick``: shorter versions of each).

    .venv/bin/python -m bench.run_all [--quick] [--only burst precision ...] [--py-spy BIN] [--json PATH]

Full: burst 3 repetitions, precision 60 s, start-up 5 repetitions, footprint 60 s, ledger 500 rounds
(about 15 minutes). Quick: burst 1 repetition, precision 15 s, start-up 3 repetitions, footprint 15 s,
ledger 200 rounds (about 4 minutes).
"""

from __future__ import annotations

import argparse
import time
import traceback
from types import ModuleType
from typing import Any

from bench import burst, common, footprint, ledger_cost, precision, startup

BENCHMARKS: dict[str, tuple[ModuleType, list[str], list[str]]] = {
    # name: (module, full argv, quick argv)
    "burst": (burst, [], ["--repeat", "1"]),
    "precision": (precision, [], ["--duration", "15"]),
    "startup": (startup, [], ["--repeat", "3"]),
    "footprint": (footprint, [], ["--duration", "15"]),
    "ledger_cost": (ledger_cost, [], ["--rounds", "200"]),
}


def run_one(name: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    module, full, short = BENCHMARKS[name]
    print(f"\n=== {name}{' (quick)' if quick else ''} ===", flush=True)
    args = module.parser().parse_args((short if quick else full) + extra)
    started = time.monotonic()
    payload: dict[str, Any] = module.run(args)
    payload["wall_s"] = round(time.monotonic() - started, 1)
    return payload


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter versions (fewer repetitions, 15-s runs)")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    p.add_argument("--pg-url", default=common.DEFAULT_PG)
    p.add_argument("--py-spy", default=None, metavar="BIN", help="profile the clock during the burst too")
    p.add_argument("--json", default=str(common.REPO / "bench" / "results.json"), metavar="PATH")
    args = p.parse_args()
    info = common.machine()
    results: dict[str, Any] = {}
    for name in args.only:
        extra = ["--pg-url", args.pg_url]
        if name == "burst" and args.py_spy:
            extra += ["--py-spy", args.py_spy]
        try:
            results[name] = run_one(name, args.quick, extra)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        common.write_json(args.json, {"machine": info, "quick": args.quick, "benchmarks": results})


if __name__ == "__main__":
    main()
