"""Charts of a saved benchmark run, as SVG for ``docs/benchmarks.md``.

``python -m bench.charts RUN.json [OUT_DIR]`` (default ``docs/assets/benchmarks``) writes:

* ``ratios.svg``: flue-models against raw redis-py per operation (raw's time over ours;
  the line at 1 is "as fast"), with redis-om where it was measured;
* ``listing.svg``: the run-listing page against the number of runs, both sides;
* ``concurrency.svg``: operations per second of 100 tasks at once: raw redis-py with a
  pool, flue-models without and with automatic pipelining.

The SVG is written by hand, a few rectangles, lines and labels: no plotting dependency,
the same bytes for the same run (so a chart changes in a diff only when a figure does),
and it renders the same in any browser, theme or printer.
"""

from __future__ import annotations

import json
import sys
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
        body.append(text(left + width + 4, y + bar - 3, f"{row.vs_raw:.2f}x"))
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
    return svg(left + int(scale) + 80, height, body, "flue-models against raw redis-py")


def listing(rows: list[Row]) -> str:
    """The run-listing page's median latency against the number of runs."""
    points = [r for r in rows if r.name.startswith("run listing page")]
    sizes = [int(r.name.rsplit(", ", 1)[1].split()[0].replace(",", "")) for r in points]
    left, top, width, height = 70, 50, 420, 200
    peak = max(max(r.flue.median_us, r.raw.median_us if r.raw else 0) for r in points) * 1.15
    body = legend(left, 38, [("flue-models", FLUE), ("raw redis-py", RAW)])
    body.append(
        f'<line x1="{left}" y1="{top + height}" x2="{left + width}" '
        f'y2="{top + height}" stroke="#222"/>'
    )
    step = width / max(1, len(points) - 1)
    for side, color in (("flue", FLUE), ("raw", RAW)):
        coords = []
        for index, row in enumerate(points):
            stats = row.flue if side == "flue" else row.raw
            assert stats is not None
            x, y = left + index * step, top + height - height * stats.median_us / peak
            coords.append(f"{x:.1f},{y:.1f}")
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
            body.append(text(x, y - 7, f"{stats.median_us / 1000:.2f} ms", "middle", color))
        body.append(
            f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" stroke-width="2"/>'
        )
    for index, size in enumerate(sizes):
        body.append(text(left + index * step, top + height + 16, f"{size:,} runs", "middle"))
    return svg(left + width + 60, top + height + 40, body, "Run listing: a page of 50")


def concurrency(rows: list[Row]) -> str:
    """Operations per second of 100 concurrent tasks, three ways."""
    shown = [r for r in rows if " tasks x " in r.name]
    sides = [
        ("raw redis-py, pool", RAW),
        ("flue-models, one at a time", PLAIN),
        ("flue-models, auto-pipelined", FLUE),
    ]
    left, top, bar, gap, scale = 230, 50, 14, 22, 380.0
    values = []
    for row in shown:
        plain = row.extra.get("without_auto_pipeline_us")
        raw = row.raw.median_us if row.raw else None
        values.append([1e6 / v if v else 0.0 for v in (raw, plain, row.flue.median_us)])
    peak = max(max(v) for v in values) * 1.1
    body = legend(10, 38, sides)
    y = top
    for row, numbers in zip(shown, values, strict=True):
        body.append(text(10, y + 10, row.name.replace(" (per op)", "")))
        y += 14
        for (label, color), value in zip(sides, numbers, strict=True):
            width = scale * value / peak
            body.append(text(left - 6, y + bar - 3, label, "end"))
            body.append(
                f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{bar}" fill="{color}"/>'
            )
            body.append(text(left + width + 4, y + bar - 3, f"{value:,.0f}/s"))
            y += bar + 4
        y += gap
    return svg(left + int(scale) + 90, y + 10, body, "100 concurrent tasks: operations per second")


def write(run: dict[str, Any], out: Path) -> list[Path]:
    """Write the three charts of a saved run; return their paths."""
    rows = [Row.from_json(row) for row in run["rows"]]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("ratios", ratios), ("listing", listing), ("concurrency", concurrency)):
        path = out / f"{name}.svg"
        path.write_text(draw(rows))
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
