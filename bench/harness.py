"""Measuring: repetitions, medians and ratios against a baseline run in the same process.

Each figure is the median of ``runs`` repetitions (with min and max); a repetition times a
loop of ``ops`` operations. The two sides of a comparison alternate repetition by
repetition, so a drift of the machine touches both alike. A ratio is the baseline's time
over flue-models' time: 1.0 is as fast, 0.5 half as fast, 2.0 twice as fast.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Step = Callable[[int], Awaitable[Any]]


@dataclass
class Stats:
    """Microseconds per operation over the repetitions."""

    median_us: float
    min_us: float
    max_us: float

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        return cls(statistics.median(samples), min(samples), max(samples))

    @property
    def per_second(self) -> float:
        return 1e6 / self.median_us if self.median_us else float("inf")


@dataclass
class Row:
    """One operation: flue-models and its baselines, each ratio against flue-models."""

    name: str
    ops: int
    flue: Stats
    raw: Stats | None = None
    om: Stats | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: "us": microseconds per operation; "B": bytes (the ratio is then of bytes).
    unit: str = "us"

    @property
    def vs_raw(self) -> float | None:
        return self.raw.median_us / self.flue.median_us if self.raw else None

    @property
    def vs_om(self) -> float | None:
        return self.om.median_us / self.flue.median_us if self.om else None

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["vs_raw"], found["vs_om"] = self.vs_raw, self.vs_om
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        """The row :meth:`as_json` wrote (to render a saved run again)."""
        stats = {
            side: Stats(**data[side]) if data.get(side) else None for side in ("flue", "raw", "om")
        }
        flue = stats["flue"]
        assert flue is not None
        return cls(
            data["name"],
            data["ops"],
            flue,
            stats["raw"],
            stats["om"],
            data["note"],
            data.get("extra", {}),
            data.get("unit", "us"),
        )


async def repeat(ops: int, runs: int, *sides: Step) -> list[Stats]:
    """Time ``ops`` calls of each side (``side(i)`` for i in range(ops)), ``runs`` times,
    alternating the sides; return each side's per-operation figures."""
    samples, _remote = await _alternate(ops, runs, sides, None)
    return [Stats.of(found) for found in samples]


async def repeat_beside(
    ops: int, runs: int, *sides: Step, elsewhere: Callable[[], Awaitable[float | None]]
) -> tuple[list[Stats], Stats | None]:
    """:func:`repeat`, with a repetition another process runs and times itself
    (redis-om's, see :class:`OmWorker`) taken after the sides in each run, so it
    alternates with them too; its figures are ``None`` if a repetition failed."""
    samples, remote = await _alternate(ops, runs, sides, elsewhere)
    return [Stats.of(found) for found in samples], Stats.of(remote) if remote else None


async def _alternate(
    ops: int,
    runs: int,
    sides: tuple[Step, ...],
    elsewhere: Callable[[], Awaitable[float | None]] | None,
) -> tuple[list[list[float]], list[float] | None]:
    samples: list[list[float]] = [[] for _ in sides]
    remote: list[float] | None = []
    counter = 0
    for _ in range(runs):
        for index, side in enumerate(sides):
            start = time.perf_counter()
            for _ in range(ops):
                await side(counter)
                counter += 1
            samples[index].append((time.perf_counter() - start) / ops * 1e6)
        if elsewhere is not None and remote is not None:
            taken = await elsewhere()
            remote = None if taken is None else [*remote, taken]
    return samples, remote


class OmWorker:
    """redis-om's side, in its own interpreter (``bench/om_worker.py``), one repetition
    at a time: :meth:`step` asks it for ``ops`` saves or gets and returns the
    microseconds per operation it measured, or ``None`` once it failed (a warning says
    why, and redis-om is left out of the figures)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.failed = False

    @classmethod
    async def start(cls, python: str, script: str, url: str, ops: int) -> OmWorker:
        prefix = f"bench-om-{time.time_ns()}:"
        process = await asyncio.create_subprocess_exec(
            python,
            script,
            url,
            prefix,
            str(ops),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def step(self, kind: str) -> float | None:
        stdin, stdout = self.process.stdin, self.process.stdout
        if self.failed or stdin is None or stdout is None:
            return None
        try:
            stdin.write(f"{kind}\n".encode())
            await stdin.drain()
            line = await asyncio.wait_for(stdout.readline(), timeout=300)
            return float(line)
        except (OSError, ValueError, TimeoutError) as exc:
            self.failed = True
            print(f"warning: redis-om failed ({exc!r}): left out", file=sys.stderr)
            return None

    async def close(self) -> None:
        """Let it delete what it wrote and end (killed if it does not within 60 s)."""
        process = self.process
        try:
            if process.stdin is not None and not self.failed:
                process.stdin.write(b"end\n")
                await process.stdin.drain()
                process.stdin.close()
            _out, err = await asyncio.wait_for(process.communicate(), timeout=60)
            if process.returncode:
                print(f"warning: redis-om ended with: {err.decode()[-300:]}", file=sys.stderr)
        except (OSError, TimeoutError):
            process.kill()
            await process.wait()


async def repeat_once(runs: int, *sides: Callable[[int], Awaitable[int]]) -> list[Stats]:
    """Like :func:`repeat` for steps that do many operations themselves: each returns how
    many it did, and the time is divided by that."""
    samples: list[list[float]] = [[] for _ in sides]
    for run in range(runs):
        for index, side in enumerate(sides):
            start = time.perf_counter()
            done = await side(run)
            samples[index].append((time.perf_counter() - start) / done * 1e6)
    return [Stats.of(found) for found in samples]


def fmt_us(value: float, unit: str = "us") -> str:
    if unit == "B":
        return f"{value:,.0f} B"
    if value >= 10_000:
        return f"{value / 1000:,.1f} ms"
    return f"{value:,.1f} µs"


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def cells(row: Row, span: str) -> list[str]:
    """One row's cells, ``span`` joining min and max."""
    unit = row.unit
    return [
        row.name,
        fmt_us(row.flue.median_us, unit),
        f"{fmt_us(row.flue.min_us, unit)}{span}{fmt_us(row.flue.max_us, unit)}",
        fmt_us(row.raw.median_us, unit) if row.raw else "",
        fmt_ratio(row.vs_raw),
        fmt_us(row.om.median_us, unit) if row.om else "",
        fmt_ratio(row.vs_om),
        row.note,
    ]


HEADINGS = [
    "operation",
    "flue-models",
    "min - max",
    "raw redis-py",
    "flue/raw",
    "redis-om",
    "flue/om",
    "note",
]


def table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    lines = [HEADINGS, *(cells(row, "-") for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADINGS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table (for ``docs/benchmarks.md``)."""
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    lines += ["| " + " | ".join(cells(row, " - ")) + " |" for row in rows]
    return "\n".join(lines)
