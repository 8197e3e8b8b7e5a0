"""Runs every benchmark and writes bench/results.json (``--quick``: shorter versions; ``--smoke``: tiny sizes).

    .venv/bin/python -m bench.run_all [--quick | --smoke] [--only burst precision ...] [--stores sqlite postgres]
        [--py-spy BIN] [--json PATH]

Full: burst 3 repetitions, precision 300 s, start-up 5 repetitions, footprint 60 s, ledger 500 rounds
(about 25 minutes). Quick: burst 1 repetition, precision 15 s, start-up 3 repetitions, footprint 15 s,
ledger 200 rounds (about 4 minutes). Smoke: burst 50 jobs once, precision 5 s, start-up 200 jobs once, footprint
200 jobs 3 s, ledger 20 rounds (about 2 minutes; its figures say nothing about the targets).

At the end, a summary: one line per target (figure, the same run's baseline, ratio, target, met), under the CPU
model, the commit (and whether the tree had uncommitted changes) and the load average at the start. Targets are
met or not against the baseline measured in the same run: figures from different machines do not compare.
"""

from __future__ import annotations

import argparse
import time
import traceback
from types import ModuleType
from typing import Any

from bench import burst, common, footprint, ledger_cost, precision, startup

BENCHMARKS: dict[str, ModuleType] = {
    "burst": burst,
    "precision": precision,
    "startup": startup,
    "footprint": footprint,
    "ledger_cost": ledger_cost,
}
MODES: dict[str, dict[str, list[str]]] = {
    "full": {name: [] for name in BENCHMARKS},
    "quick": {
        "burst": ["--repeat", "1"],
        "precision": ["--duration", "15"],
        "startup": ["--repeat", "3"],
        "footprint": ["--duration", "15"],
        "ledger_cost": ["--rounds", "200"],
    },
    # Checks that the scripts run end to end, in about 2 minutes; its figures say nothing about the targets.
    "smoke": {
        "burst": ["--repeat", "1", "--jobs", "50"],
        "precision": ["--duration", "5"],
        "startup": ["--jobs", "200", "--repeat", "1"],
        "footprint": ["--jobs", "200", "--duration", "3"],
        "ledger_cost": ["--rounds", "20"],
    },
}


def run_one(name: str, mode: str, extra: list[str]) -> dict[str, Any]:
    module = BENCHMARKS[name]
    print(f"\n=== {name}{'' if mode == 'full' else f' ({mode})'} ===", flush=True)
    args = module.parser().parse_args(MODES[mode][name] + extra)
    started = time.monotonic()
    payload: dict[str, Any] = module.run(args)
    payload["wall_s"] = round(time.monotonic() - started, 1)
    return payload


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.run_all", description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter versions (fewer repetitions, 15-s runs)")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes, to check the scripts run (writes JSON only with --json)"
    )
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    p.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    p.add_argument("--pg-url", default=common.DEFAULT_PG)
    p.add_argument("--py-spy", default=None, metavar="BIN", help="profile the clock during the burst too")
    p.add_argument("--json", default=None, metavar="PATH", help="default: bench/results.json (not with --smoke)")
    args = p.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    path = args.json or (None if args.smoke else str(common.REPO / "bench" / "results.json"))
    info = common.machine()
    results: dict[str, Any] = {}
    for name in args.only:
        extra = ["--pg-url", args.pg_url, "--stores", *args.stores]
        if name == "burst" and args.py_spy:
            extra += ["--py-spy", args.py_spy]
        try:
            results[name] = run_one(name, mode, extra)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        common.write_json(path, {"machine": info, "mode": mode, "benchmarks": results})
    summary = print_summary(info, results, mode)
    common.write_json(path, {"machine": info, "mode": mode, "summary": summary, "benchmarks": results})


def print_summary(info: dict[str, Any], results: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Every benchmark's targets in one table; the baselines they are measured against as numbered notes."""
    verdicts = [v for payload in results.values() for v in payload.get("verdicts", []) if v["met"] != "-"]
    baselines = list(dict.fromkeys(v["baseline_label"] for v in verdicts))
    rows = []
    for v in verdicts:
        cells = common.verdict_row(v, with_benchmark=True)
        cells[4] += f" [{baselines.index(v['baseline_label']) + 1}]"
        rows.append(cells)
    load = " ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    dirty = " (uncommitted changes)" if info["dynoclock_modified"] or info.get("dirty") else ""
    print("\n=== summary ===")
    print(f"CPU: {info['cpu_model']} ({info['cores']} cores); commit {info['git_head']}{dirty}")
    quiet = "quiet" if common.quiet(info) else f"NOT quiet: figures for the record need < {common.QUIET_LOAD:g}"
    print(f"load average at start: {load} ({quiet}){'' if mode == 'full' else f'; --{mode} run'}")
    common.print_table("Targets", ["benchmark", *common.VERDICT_HEADERS], rows)
    for number, label in enumerate(baselines, 1):
        print(f"[{number}] baseline: {label}")
    failed = [name for name, payload in results.items() if "error" in payload]
    if failed:
        print(f"no figures (the benchmark failed): {', '.join(failed)}")
    return verdicts


if __name__ == "__main__":
    main()
