"""Session benchmark: a context load against a full load, a fork against a copy.

A session of 50,000 messages (about 100 bytes of content each) gets a compaction that
keeps its last 40 entries, then 5 more messages. Measured, as the median of 5 runs with
min and max:

* ``Session.load_context`` against ``Session.load``: time, and bytes the server sent
  (its ``total_net_output_bytes`` before and after, less what that ``INFO`` costs);
* ``Session.fork`` at the 25,000th entry against a copy of those 25,000 entries
  (``Session.save_snapshot`` of a new session): time, and the memory the new session
  holds (``MEMORY USAGE`` of its keys).

Run it with ``python -m bench.sessions [--json] [--entries N]`` (on ``$REDIS_URL``, else
the embedded server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import flue_models as fm
from flue_models import CompactionEntry, MessageEntry, Session

RUNS = 5
TEXT = "a message of about one hundred bytes, as a short turn of an agent conversation is."


async def timed(step: Callable[[], Awaitable[Any]], runs: int = RUNS) -> dict[str, float]:
    """Median, min and max milliseconds of ``runs`` calls."""
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        await step()
        took.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(took), "min_ms": min(took), "max_ms": max(took)}


async def sent_bytes(db: fm.Database, step: Callable[[], Awaitable[Any]]) -> int:
    """Bytes the server sent while ``step`` ran (less one INFO reply's worth)."""

    async def output() -> int:
        return int((await db.client.info("stats"))["total_net_output_bytes"])

    first = await output()
    idle = await output() - first  # what an INFO call itself adds
    before = await output()
    await step()
    return await output() - before - idle


def session_keys(db: fm.Database, session_id: str) -> list[str]:
    """The row and the owned keys of a session, in its bucket."""
    spec = Session.__flue_spec__
    return [spec.record_key(db.keys, session_id), *Session.owned_keys(db.keys, session_id)]


async def memory(db: fm.Database, keys: list[str]) -> int:
    """Bytes the server holds for ``keys`` (``MEMORY USAGE``)."""
    return sum([int(await db.client.memory_usage(key) or 0) for key in keys])


async def build(entries: int) -> list[str]:
    """The long session: ``entries`` messages, a compaction keeping 40, 5 more."""
    session = await Session.open("bench/long")
    ids: list[str] = []
    parent = None
    for start in range(0, entries, 1000):
        batch = []
        for n in range(start, min(start + 1000, entries)):
            batch.append(MessageEntry(id=f"m{n}", parent_id=parent, role="user", content=TEXT))
            parent = f"m{n}"
        await session.append_many(batch)
        ids += [entry.id for entry in batch]
    await session.append(
        CompactionEntry(
            id="c", parent_id=ids[-1], summary="summary", first_kept_entry_id=ids[-40],
            tokens_before=1,
        )
    )  # fmt: skip
    parent = "c"
    for n in range(5):
        await session.append(MessageEntry(id=f"a{n}", parent_id=parent, role="user", content=TEXT))
        parent = f"a{n}"
    return ids


async def run(entries: int, url: str | None = None) -> dict[str, Any]:
    """Build the session under a fresh prefix, measure, delete what it wrote."""
    async with fm.connect(url, key_prefix=f"bench-sessions-{time.time_ns()}") as db:
        try:
            ids = await build(entries)
            figures: dict[str, Any] = {"entries": entries + 6}
            figures["load_context"] = await timed(lambda: Session.load_context("bench/long"))
            figures["load"] = await timed(lambda: Session.load("bench/long"))
            figures["load_context"]["bytes"] = await sent_bytes(
                db, lambda: Session.load_context("bench/long")
            )
            figures["load"]["bytes"] = await sent_bytes(db, lambda: Session.load("bench/long"))
            middle = ids[len(ids) // 2 - 1]
            counter = iter(range(1_000_000))
            figures["fork"] = await timed(
                lambda: Session.fork("bench/long", middle, new_id=f"bench/fork-{next(counter)}")
            )
            full = await Session.load("bench/long")
            assert full is not None
            shared = full.entries[: len(ids) // 2]
            figures["copy"] = await timed(
                lambda: Session.save_snapshot(f"bench/copy-{next(counter)}", shared)
            )
            fork_keys = session_keys(db, "bench/fork-0")
            copy_keys = session_keys(db, f"bench/copy-{RUNS}")
            figures["fork"]["memory_bytes"] = await memory(db, fork_keys)
            figures["copy"]["memory_bytes"] = await memory(db, copy_keys)
            return figures
        finally:
            keys = [key async for key in db.client.scan_iter(match=db.keys.pattern())]
            for start in range(0, len(keys), 1000):
                await db.client.delete(*keys[start : start + 1000])


def table(figures: dict[str, Any]) -> str:
    """The figures as an aligned table, each ratio against its baseline."""
    load, context = figures["load"], figures["load_context"]
    fork, copy = figures["fork"], figures["copy"]
    rows = [
        ("operation", "median ms", "min", "max", "bytes", "ratio to baseline"),
        ("load (baseline)", *_times(load), f"{load['bytes']:,}", "1"),
        ("load_context", *_times(context), f"{context['bytes']:,}",
         f"{load['median_ms'] / context['median_ms']:.0f}x faster, "
         f"{load['bytes'] / max(context['bytes'], 1):.0f}x fewer bytes"),
        ("copy (baseline)", *_times(copy), f"{copy['memory_bytes']:,} held", "1"),
        ("fork", *_times(fork), f"{fork['memory_bytes']:,} held",
         f"{copy['median_ms'] / fork['median_ms']:.0f}x faster, "
         f"{copy['memory_bytes'] / max(fork['memory_bytes'], 1):.0f}x less memory"),
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return f"session of {figures['entries']:,} entries, 40-entry context\n" + "\n".join(lines)


def _times(figure: dict[str, float]) -> tuple[str, str, str]:
    return f"{figure['median_ms']:.2f}", f"{figure['min_ms']:.2f}", f"{figure['max_ms']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--entries", type=int, default=50_000, help="messages in the session")
    options = parser.parse_args()
    figures = asyncio.run(run(options.entries))
    print(json.dumps(figures, indent=2) if options.json else table(figures))


if __name__ == "__main__":
    main()
