"""The benchmarks run (on a small scale) and measure what they say they measure."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from xml.etree import ElementTree

import redis

from bench import charts, cluster as cluster_bench, in_latency, instructions, sessions
from bench.harness import OmWorker, Row, Stats, repeat_beside, table
from bench.workloads import Bench
from flue_models.cli.bench import bench_folder
from tests.command_line import run_cli


async def test_the_session_benchmark_compares_context_loads_and_forks(redis_url: str) -> None:
    figures = await sessions.run(500, redis_url)
    assert figures["entries"] == 506
    assert 0 < figures["load_context"]["bytes"] < figures["load"]["bytes"] / 5
    assert 0 < figures["fork"]["memory_bytes"] < figures["copy"]["memory_bytes"]
    for operation in ("load", "load_context", "fork", "copy"):
        times = figures[operation]
        assert 0 < times["min_ms"] <= times["median_ms"] <= times["max_ms"]
    assert "ratio to baseline" in sessions.table(figures)


async def test_the_in_benchmark_measures_pings_both_ways_and_cleans_up(redis_url: str) -> None:
    figures = await in_latency.measure(redis_url, records=40, values=100)
    assert figures["matched"] == 40  # every record's code is among the values
    assert figures["pings"] > 0
    assert figures["raw_pings"] > 0
    assert figures["worst_ping_ms"] > 0
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(match="bench-in-*")) == []  # it deleted what it wrote


async def test_the_harness_measures_each_operation_both_ways_and_cleans_up(
    redis_url: str,
) -> None:
    async with Bench(redis_url, runs=5) as bench:
        rows = [
            await bench.single_save(5),
            await bench.update_one_field(5),
            await bench.bulk_save(20),
        ]
        await bench.seed_items(2000)
        rows += [await bench.get(5), await bench.get_many(3, 10), await bench.page(5)]
        rows += [await bench.count(5), await bench.memory(2000)]
        rows += await bench.concurrent([1, 5], 4)
        rows += await bench.streams(10, batch=10)
        rows += await bench.sessions(15, entries=50)
        rows += await bench.run_listing([100, 200], ops=5)
        rows.append(await bench.tail_latency(5))
        prefixes = (bench.prefix, bench.raw_prefix)
    for row in rows:
        assert row.raw is not None, row.name
        assert 0 < row.flue.min_us <= row.flue.median_us <= row.flue.max_us, row.name
        assert row.vs_raw is not None, row.name
        assert row.vs_raw > 0, row.name
    assert len({row.name for row in rows}) == len(rows)
    assert "flue/raw" in table(rows)
    client = redis.Redis.from_url(redis_url)
    try:
        for prefix in prefixes:
            assert not list(client.scan_iter(match=f"{prefix}::*"))
    finally:
        client.close()


async def test_a_side_timed_in_another_process_alternates_with_the_others(
    tmp_path: Path,
) -> None:
    """redis-om's side (``OmWorker``) runs one repetition per run, after the other sides,
    and reports its own figure; a worker that fails is left out, not waited for."""
    script = tmp_path / "worker.py"  # the protocol of bench/om_worker.py, without redis-om
    script.write_text(
        "import sys\n"
        "for n, line in enumerate(sys.stdin):\n"
        "    if line.strip() not in ('save', 'get'):\n"
        "        break\n"
        "    print(float(n + 1), flush=True)\n"
    )
    worker = await OmWorker.start(sys.executable, str(script), "redis://unused", 2)
    order: list[str] = []

    async def side_a(_i: int) -> None:
        order.append("a")

    async def side_b(_i: int) -> None:
        order.append("b")

    async def elsewhere() -> float | None:
        order.append("om")
        return await worker.step("save")

    (a, b), om = await repeat_beside(2, 3, side_a, side_b, elsewhere=elsewhere)
    await worker.close()
    assert order == ["a", "a", "b", "b", "om"] * 3
    assert om == Stats(2.0, 1.0, 3.0)
    assert a.median_us > 0
    assert b.median_us > 0
    assert worker.process.returncode == 0
    gone = tmp_path / "gone.py"
    gone.write_text("raise SystemExit(3)\n")
    dead = await OmWorker.start(sys.executable, str(gone), "redis://unused", 2)
    _found, none = await repeat_beside(1, 2, side_a, elsewhere=lambda: dead.step("get"))
    assert none is None
    assert dead.failed
    await dead.close()
    assert dead.process.returncode == 3


def test_flue_models_bench_finds_the_checkout() -> None:
    assert bench_folder() == Path(__file__).parents[2]


def test_flue_models_bench_passes_its_options_to_the_harness(tmp_path: Path) -> None:
    row = Row("single save", 10, Stats(300.0, 290.0, 310.0), Stats(150.0, 140.0, 160.0))
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"context": {"server": "x"}, "rows": [row.as_json()]}))
    shown = run_cli("bench", "--from-json", str(saved), "--markdown")
    assert shown.returncode == 0, shown.stderr
    assert "| single save | 300.0 µs | 290.0 µs - 310.0 µs | 150.0 µs | 0.50x |" in shown.stdout


def test_the_charts_of_a_saved_run_are_svg_with_every_figure(tmp_path: Path) -> None:
    def row(name: str, flue: float, raw: float, **extra: object) -> dict[str, object]:
        return Row(name, 10, Stats(flue, flue, flue), Stats(raw, raw, raw), extra=extra).as_json()

    def tasks(count: int, kind: str, flue: float, raw: float, plain: float) -> dict[str, object]:
        name = f"{count} tasks x 100 {kind} (per op)"
        return row(name, flue, raw, tasks=count, kind=kind, without_auto_pipeline_us=plain)

    run = {
        "context": {},
        "rows": [
            row("single save", 300.0, 150.0),
            row("run listing page of 50, 1,000 runs", 1500.0, 900.0),
            row("run listing page of 50, 1,000,000 runs", 1600.0, 950.0),
            tasks(1, "gets", 200.0, 100.0, 200.0),
            tasks(100, "gets", 40.0, 50.0, 120.0),
            tasks(1, "saves", 300.0, 150.0, 300.0),
            tasks(100, "saves", 150.0, 80.0, 250.0),
        ],
    }
    written = charts.write(run, tmp_path)
    assert [p.name for p in written] == [
        "ratios.svg", "listing.svg", "concurrency-gets.svg", "concurrency-saves.svg",
    ]  # fmt: skip
    for path in written:
        root = ElementTree.parse(path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    ratios = (tmp_path / "ratios.svg").read_text()
    assert "0.50x" in ratios
    assert "1.25x" in ratios  # 50 / 40
    assert "1,000,000 runs" in (tmp_path / "listing.svg").read_text()
    gets = (tmp_path / "concurrency-gets.svg").read_text()
    assert all(f"{v:,}/s" in gets for v in (20000, 8333, 25000))  # at 100 tasks
    assert gets.count("<circle") == 6  # 2 task counts x 3 ways
    assert "1 task<" in gets
    charts.write(run, tmp_path / "again")
    assert (tmp_path / "again" / "ratios.svg").read_text() == ratios  # the same bytes


async def test_the_cluster_benchmark_measures_both_topologies_both_ways() -> None:
    found = await cluster_bench.run(writers=2, ops=20, runs=1)
    # It measures without the suite's slot check, and leaves it on for the tests after.
    assert os.environ.get("FLUE_CHECK_SLOTS") == "1"
    assert list(found) == ["1 primary", "3 primaries"]
    for rows in found.values():
        names = [r.name.split(",")[0] for r in rows]
        assert names == [
            "event append",
            "model save",
            "model save",
            "get_many of 100 records",
            *["page of 100 of 4"] * 4,
        ]
        assert [r.name.rsplit(", ", 1)[1] for r in rows[-4:]] == [
            "1 bucket(s)",
            "4 bucket(s)",
            "16 bucket(s)",
            "64 bucket(s)",
        ]
        assert all(r.raw is not None and r.flue.median_us > 0 for r in rows)


async def test_the_instruction_counter_runs_every_operation_and_cleans_up(
    redis_url: str, tmp_path: Path
) -> None:
    """The worker callgrind runs (here without callgrind): each operation, twice."""
    prefixes = [await instructions.work(op, 2, redis_url) for op in instructions.OPERATIONS]
    with redis.Redis.from_url(redis_url) as client:
        for prefix in (p for both in prefixes for p in both):
            assert list(client.scan_iter(match=f"{prefix}::*")) == []
    out = tmp_path / "callgrind.out"
    out.write_text("events: Ir\nsummary: 12345\n")
    assert instructions.total(out) == 12345
