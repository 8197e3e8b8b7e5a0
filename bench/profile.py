"""Optional sampling of the clock with py-spy (not in the venv: ``--py-spy /path/to/py-spy``).

py-spy writes collapsed stacks (``--format raw``: ``frame;frame;... count``); ``top_frames`` turns them into
the functions where samples land (self) and the functions on the stack (inclusive), as shares of all samples.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def start(py_spy: str, pid: int, out: Path, gil: bool = False, rate: int = 200) -> subprocess.Popen[bytes]:
    """Sample ``pid`` until ``stop``; non-blocking, so the clock is not paused at each sample.

    ``gil``: only the thread holding the GIL (where CPU goes); otherwise every thread py-spy deems active
    (where wall time goes, waits on locks and the database included).
    """
    argv = [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking"]
    argv += ["--output", str(out), *(["--gil"] if gil else [])]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out.with_suffix(".err").open("wb"))


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """py-spy writes its output when interrupted."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['func']} ({file})"


def top_frames(raw: Path, count: int = 15, depth: int = 5) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw output."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stacks: Counter[str] = Counter()  # the leaf and its callers, innermost first
    total = 0
    if not raw.exists():
        err = raw.with_suffix(".err")
        detail = err.read_text(errors="replace").strip()[-300:] if err.exists() else ""
        return {"samples": 0, "error": f"no py-spy output {detail}".strip()}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += samples
        self_samples[frames[-1]] += samples
        stacks[" <- ".join(reversed(frames[-depth:]))] += samples
        for frame in set(frames):
            inclusive[frame] += samples

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "samples": n, "share": round(n / total, 3)} for f, n in counter.most_common(count)]

    return {
        "samples": total,
        "self": share(self_samples),
        "inclusive": share(inclusive),
        "stacks": share(stacks)[:10],
    }


def print_top(title: str, top: dict[str, Any]) -> None:
    print(f"\n{title}: {top['samples']} samples")
    if top.get("error"):
        print(f"  {top['error']}")
    for kind in ("self", "inclusive", "stacks"):
        if not top.get(kind):
            continue
        print(f"  top {kind}:")
        for item in top[kind]:
            print(f"    {item['share'] * 100:5.1f}%  {item['frame']}")
