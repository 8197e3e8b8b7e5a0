"""Shared pieces of the benchmarks: the machine, statistics, targets and verdicts, tables, JSON (processes: ``procs``;
state databases: ``stores``).

Nothing here changes the product: the clock runs as ``python clock.py`` in a
subprocess (cwd = the repo), and its ledger is read afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from dynoclock.observe.timefmt import iso_utc

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
QUIET_LOAD = 0.5  # figures for the record are taken with the 1-minute load average below this at the start


# ---- the machine ------------------------------------------------------------------------------


def bench_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser, described by the first paragraph of its docstring, with the options they all take:
    which stores, the Postgres URL, keeping the temp dir, JSON output."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    p.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (schedules, logs)")
    p.add_argument("--json", default=None, metavar="PATH")
    return p


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the figures were measured on, with the load average at the start of the benchmark."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "date": iso_utc(datetime.now(UTC), timespec="seconds"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "apscheduler": _version("APScheduler"),
        "sqlalchemy": _version("SQLAlchemy"),
        "psycopg": _version("psycopg"),
        "load_average_at_start": load_average(),
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "dynoclock_modified": bool(_git("status", "--porcelain", "--", "dynoclock", "clock.py")),
        "dirty": bool(_git("status", "--porcelain", "--", ".", ":!bench/results.json")),
    }


def quiet(info: dict[str, Any]) -> bool:
    return bool(info["load_average_at_start"][0] < QUIET_LOAD)


def print_machine(info: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    busy = "" if quiet(info) else f"  (NOT quiet: figures for the record need a load average < {QUIET_LOAD:g})"
    dirty = (
        " +uncommitted dynoclock changes"
        if info["dynoclock_modified"]
        else " +uncommitted changes outside dynoclock/"
        if info.get("dirty")
        else ""
    )
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, {info['mem_gb']} GB, Linux {info['kernel']}")
    print(
        f"python {info['python']}, APScheduler {info['apscheduler']}, SQLAlchemy {info['sqlalchemy']}, "
        f"psycopg {info['psycopg']}; dynoclock at {info['git_head']}{dirty}"
    )
    print(f"date {info['date']}, load average at start: {load}{busy}")


# ---- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 values is the 990th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """n, median, p99 (nearest rank), max (and min, mean) of a list of figures; NaN when empty."""
    if not values:
        return {"n": 0, "median": math.nan, "p99": math.nan, "max": math.nan, "min": math.nan, "mean": math.nan}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
        "min": min(values),
        "mean": sum(values) / len(values),
    }


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _missing(value: float | int | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Target:
    """An absolute target from the issue: ``value <= limit``; printed next to the figure, never asserted.

    Used only where a same-run baseline cannot stand in (plain APScheduler has no ``check``; idle CPU and
    precision have limits of their own); the baseline is still printed beside it, with the ratio.
    """

    limit: float
    unit: str = "ms"

    def text(self) -> str:
        return f"<= {self.limit:g} {self.unit}"

    def met(self, value: float | int | None, baseline: float | int | None = None) -> str:
        if _missing(value):
            return "?"
        assert value is not None
        return "yes" if value <= self.limit else "NO"


@dataclass(frozen=True)
class RatioTarget:
    """A target relative to plain APScheduler measured in the same run: ``value / baseline <= limit``.

    Machines differ (the same burst measured a median of 67 ms on one CPU and 170 ms on another), so the
    clock is judged against the baseline it ran beside, never against a figure from another session.
    """

    limit: float
    baseline_label: str

    def text(self) -> str:
        return f"<= {self.limit:g}x baseline"

    def met(self, value: float | int | None, baseline: float | int | None) -> str:
        r = ratio(value, baseline)
        if r is None:
            return "?"
        return "yes" if r <= self.limit else "NO"


def ratio(value: float | int | None, baseline: float | int | None) -> float | None:
    """value / baseline; None when either is missing or the baseline is not positive (no meaningful ratio)."""
    if _missing(value) or _missing(baseline):
        return None
    assert value is not None and baseline is not None
    return value / baseline if baseline > 0 else None


@dataclass(frozen=True)
class Size:
    """The size a verdict was measured at (e.g. "1000 jobs"), and whether it is the one the issue's target names."""

    text: str = ""
    issue: bool = True

    def longer(self, text: str, issue: bool) -> Size:
        return Size(f"{self.text}, {text}" if self.text else text, self.issue and issue)


def verdict(
    benchmark: str,
    measure: str,
    subject: str,
    figure: float | int | None,
    baseline: float | int | None,
    unit: str,
    target: Target | RatioTarget | None,
    baseline_label: str = "plain APScheduler, same run",
    size: Size = Size(),
    invalid: str = "",
) -> dict[str, Any]:
    """One line of a benchmark's findings: the figure, the same-run baseline, their ratio, the target, met.

    ``met`` is "yes", "NO", "?" (a figure or the baseline is missing) or "-" (no target: shown for comparison).
    A ``size`` other than the issue's (--jobs, --duration) is said beside met: the verdict then says nothing
    about the target. ``invalid`` says why the figures cannot be compared (met is then "?").
    """
    if isinstance(target, RatioTarget):
        baseline_label = target.baseline_label
    return {
        "benchmark": benchmark,
        "measure": measure,
        "subject": subject,
        "figure": figure,
        "baseline": baseline,
        "baseline_label": baseline_label,
        "unit": unit,
        "ratio": ratio(figure, baseline),
        "kind": "ratio" if isinstance(target, RatioTarget) else "absolute" if target else "none",
        "limit": target.limit if target else None,
        "target": target.text() if target else "-",
        "met": "?" if invalid and target else target.met(figure, baseline) if target else "-",
        "size": size.text,
        "issue_size": size.issue,
        "invalid": invalid,
    }


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


DIGITS = {"ms": 2, "s": 3, "MB": 1}  # decimals shown per unit (counts: none)


def verdict_row(v: dict[str, Any], with_benchmark: bool = False) -> list[str]:
    """A verdict as table cells: [benchmark,] measure, subject, figure, baseline, ratio, target, met."""
    unit = f" {v['unit']}" if v["unit"] else ""
    digits = DIGITS.get(v["unit"], 0)
    met = v["met"] if v["issue_size"] or v["met"] == "-" else f"{v['met']} (size: {v['size']}, not the issue's)"
    if v.get("invalid"):
        met += f" (INVALID: {v['invalid']})"
    cells = [
        v["measure"],
        v["subject"],
        fmt(v["figure"], digits) + unit,
        fmt(v["baseline"], digits) + unit,
        fmt_ratio(v["ratio"]),
        v["target"],
        met,
    ]
    return [v["benchmark"], *cells] if with_benchmark else cells


VERDICT_HEADERS = ["measure", "configuration", "figure", "baseline", "ratio", "target", "met"]


def print_verdicts(title: str, verdicts: Sequence[dict[str, Any]]) -> None:
    """The targets of one benchmark, one line each, and which run is the baseline of each."""
    if not verdicts:
        return
    print_table(title, VERDICT_HEADERS, [verdict_row(v) for v in verdicts])
    for label in dict.fromkeys(v["baseline_label"] for v in verdicts):
        print(f"baseline: {label}")


# ---- tables and JSON ------------------------------------------------------------------------------


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def publish(benchmark: str, info: dict[str, Any], path: str | None, **fields: Any) -> dict[str, Any]:
    """A benchmark's results: its name, the machine, then ``fields`` in order; written as JSON to ``path`` if given."""
    payload = {"benchmark": benchmark, "machine": info, **fields}
    write_json(path, payload)
    return payload


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_clean(payload), indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


# ---- durations ------------------------------------------------------------------------------


def ms_between(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds() * 1000


# ---- the work directory ----------------------------------------------------------------------


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A temp directory for schedules, state files and logs (kept with --keep)."""
    path = Path(tempfile.mkdtemp(prefix="dynoclock-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
