"""Charts of a saved benchmark run, as SVG for ``docs/benchmarks.md``.

``python -m bench.charts RUN.json [OUT_DIR]`` (default ``docs/assets/benchmarks``) writes:

* ``ratios.svg``: flue-models against raw redis-py per operation (raw's time over ours;
  the line at 1 is "as fast"), with redis-om where it was measured;
* ``listing.svg``: the run-listing page against the number of runs, both sides;
* ``concurrency-gets.svg``, ``concurrency-saves.svg``: operations per second against the
  number of concurrent tasks: raw redis-py with a pool, flue-models without and with
  automatic pipelining.

The SVG is written by hand, a few rectangles, lines and labels: no plotting dependency,
the same bytes for the same run (so a chart changes in a diff only when a figure does),
and it renders the same in any browser, theme or printer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from bench.harness import Row

OUT = Path(__file__).parent.parent / "docs" / "assets" / "benchmarks"
FLUE, RAW, OM, PLAIN = "#3f51b5", "#9e9e9e", "#e65100", "#90caf9"
FONT = 'font-family="sans-serif" font-size="12"'


def svg(width: int, height: int, body: list[str], title: str) -> str:
    """A complete SVG document."""
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="10" y="20" {FONT} font-weight="bold">{escape(title)}</text>',
            *body,
            "</svg>\n",
        ]
    )


def text(x: float, y: float, label: str, anchor: str = "start", color: str = "#222") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" {FONT} text-anchor="{anchor}" fill="{color}">'
        f"{escape(label)}</text>"
    )


def legend(x: float, y: float, items: list[tuple[str, str]]) -> list[str]:
    parts = []
    for label, color in items:
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>')
        parts.append(text(x + 14, y, label))
        x += 24 + 7 * len(label)
    return parts


def ratios(rows: list[Row]) -> str:
    """Horizontal bars of raw's time over flue-models' per operation."""
    shown = [r for r in rows if r.vs_raw is not None and r.unit == "us" and r.ops > 1]
    top, bar, gap, left, scale = 50, 14, 8, 300, 360.0
    limit = max(1.25, max(max(r.vs_raw or 0, r.vs_om or 0) for r in shown))
    height = top + len(shown) * (bar + gap) + 40
    body = legend(left, 38, [("flue/raw", FLUE), ("flue/redis-om", OM)])
    for index, row in enumerate(shown):
        y = top + index * (bar + gap)
        width = scale * (row.vs_raw or 0) / limit
        body.append(text(left - 6, y + bar - 3, row.name, "end"))
        body.append(f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{bar}" fill="{FLUE}"/>')
        label = f"{row.vs_raw:.2f}x" + (f" (redis-om {row.vs_om:.2f}x)" if row.vs_om else "")
        body.append(text(left + scale + 12, y + bar - 3, label))  # a column: clear of bars
        if row.vs_om is not None:
            om_x = left + scale * row.vs_om / limit
            body.append(f'<circle cx="{om_x:.1f}" cy="{y + bar / 2}" r="4" fill="{OM}"/>')
    one = left + scale / limit
    bottom = top + len(shown) * (bar + gap)
    body.append(
        f'<line x1="{one:.1f}" y1="{top - 6}" x2="{one:.1f}" y2="{bottom}" '
        'stroke="#222" stroke-dasharray="4 3"/>'
    )
    body.append(text(one, bottom + 16, "1 = as fast as raw redis-py", "middle"))
    return svg(left + int(scale) + 190, height, body, "flue-models against raw redis-py")


def line_chart(
    title: str,
    labels: list[str],
    series: list[tuple[str, str, list[float]]],
    unit: Callable[[float], str],
) -> str:
    """Lines over categories: ``series`` are (name, color, one value per label); each
    line's last value is written at its end, the legend above the plot."""
    left, width, height = 80, 420, 200
    top = 40 + 16 * len(series)
    peak = max(max(values) for _n, _c, values in series) * 1.15
    body = []
    for index, (name, color, _values) in enumerate(series):
        y = 38 + 16 * index
        body.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        body.append(text(left + 14, y, name))
    body.append(
        f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" '
        'stroke="#222"/>'
    )
    step = width / max(1, len(labels) - 1)
    ends = []
    for _name, color, values in series:
        coords = []
        for index, value in enumerate(values):
            x, y = left + index * step, top + height - height * value / peak
            coords.append(f"{x:.1f},{y:.1f}")
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        body.append(
            f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" stroke-width="2"/>'
        )
        ends.append((top + height - height * values[-1] / peak, values[-1], color))
    placed = -100.0
    for y, value, color in sorted(ends):  # from the top down, never on top of each other
        placed = max(y + 4, placed + 14)
        body.append(text(left + width + 8, placed, unit(value), "start", color))
    for index, label in enumerate(labels):
        body.append(text(left + index * step, top + height + 16, label, "middle"))
    return svg(left + width + 90, top + height + 30, body, title)


def listing(rows: list[Row]) -> str:
    """The run-listing page's median latency against the number of runs."""
    points = [r for r in rows if r.name.startswith("run listing page") and r.raw]
    labels = [r.name.rsplit(", ", 1)[1] for r in points]
    series = [
        ("flue-models", FLUE, [r.flue.median_us for r in points]),
        ("raw redis-py", RAW, [r.raw.median_us for r in points if r.raw]),
    ]
    return line_chart("Run listing: a page of 50", labels, series, lambda v: f"{v / 1000:.2f} ms")


def throughput(rows: list[Row], kind: str) -> str:
    """Operations per second against the number of concurrent tasks, three ways."""
    points = [r for r in rows if r.extra.get("kind") == kind and r.raw]
    labels = [f"{r.extra['tasks']} task{'s' if r.extra['tasks'] != 1 else ''}" for r in points]
    series = [
        ("raw redis-py, pool", RAW, [1e6 / r.raw.median_us for r in points if r.raw]),
        (
            "flue-models, one at a time",
            PLAIN,
            [1e6 / r.extra["without_auto_pipeline_us"] for r in points],
        ),
        ("flue-models, auto-pipelined", FLUE, [1e6 / r.flue.median_us for r in points]),
    ]
    title = f"Concurrent tasks doing {kind}: operations per second"
    return line_chart(title, labels, series, lambda v: f"{v:,.0f}/s")


def write(run: dict[str, Any], out: Path) -> list[Path]:
    """Write the three charts of a saved run; return their paths."""
    rows = [Row.from_json(row) for row in run["rows"]]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    charts = {
        "ratios": ratios(rows),
        "listing": listing(rows),
        "concurrency-gets": throughput(rows, "gets"),
        "concurrency-saves": throughput(rows, "saves"),
    }
    for name, drawn in charts.items():
        path = out / f"{name}.svg"
        path.write_text(drawn)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    out = Path(argv[1]) if len(argv) > 1 else OUT
    for path in write(json.loads(Path(argv[0]).read_text()), out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
