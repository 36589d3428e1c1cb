"""The benchmarks run (on a small scale) and measure what they say they measure."""

from __future__ import annotations

from bench import sessions


async def test_the_session_benchmark_compares_context_loads_and_forks(redis_url: str) -> None:
    figures = await sessions.run(500, redis_url)
    assert figures["entries"] == 506
    assert 0 < figures["load_context"]["bytes"] < figures["load"]["bytes"] / 5
    assert 0 < figures["fork"]["memory_bytes"] < figures["copy"]["memory_bytes"]
    for operation in ("load", "load_context", "fork", "copy"):
        times = figures[operation]
        assert 0 < times["min_ms"] <= times["median_ms"] <= times["max_ms"]
    assert "ratio to baseline" in sessions.table(figures)
