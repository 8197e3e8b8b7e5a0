"""A small inline SVG of one job's recent runs: one bar per run, height = duration, colour = outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from markupsafe import Markup, escape

from dynoclock.observe.timefmt import duration_text
from dynoclock.state.runs import Run

WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 640, 150, 16, 22, 44
COLOURS = {
    "ok": "#2e7d32",
    "failed": "#c62828",
    "timeout": "#ef6c00",
    "interrupted": "#6a1b9a",
    "missed": "#9e9e9e",
    "skipped": "#bdbdbd",
    "running": "#1565c0",
    "claimed": "#90caf9",
}


def durations_chart(runs: Sequence[Run]) -> Markup:
    """``runs`` oldest first. Runs without a duration (missed, skipped, running) get a short stub bar."""
    if not runs:
        return Markup('<p class="muted">No runs to chart yet.</p>')
    longest = max((run.duration_ms or 0 for run in runs), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(runs), 1)
    bar_w = max(min(step * 0.7, 28), 2)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="Durations and outcomes of the last {len(runs)} runs" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" y2="{TOP + plot_h}" stroke="#ccc"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH - 8}" y2="{TOP}" stroke="#eee" stroke-dasharray="3 3"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" class="axis">{escape(duration_text(longest))}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" class="axis">0</text>',
    ]
    for i, run in enumerate(runs):
        height = plot_h * (run.duration_ms or 0) / longest
        height = max(height, 3)
        x = LEFT + i * step + (step - bar_w) / 2
        y = TOP + plot_h - height
        colour = COLOURS.get(run.status, "#757575")
        label = f"{_when(run)} {run.status} {duration_text(run.duration_ms)}"
        if run.reason != "schedule":
            label += f" ({run.reason})"
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{height:.1f}" fill="{colour}" '
            f'data-status="{escape(run.status)}"><title>{escape(label)}</title></rect>'
        )
    baseline = TOP + plot_h + 15
    parts.append(f'<text x="{LEFT}" y="{baseline}" class="axis">{escape(_when(runs[0]))}</text>')
    if len(runs) > 1:
        parts.append(
            f'<text x="{WIDTH - 8}" y="{baseline}" text-anchor="end" class="axis">{escape(_when(runs[-1]))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _when(run: Run) -> str:
    return run.scheduled_for.astimezone(UTC).strftime("%Y-%m-%d %H:%M") + "Z"
