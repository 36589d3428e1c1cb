"""redis-om's side of the benchmarks, run in its own environment (``.bench-om``): save and
get on a ``HashModel`` (it cannot query a plain server). Prints one JSON document: the
microseconds per operation of each repetition.

Usage: ``.bench-om/bin/python bench/om_worker.py URL PREFIX OPS RUNS``
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time

from aredis_om import HashModel, get_redis_connection  # type: ignore[import-not-found]


async def main(url: str, prefix: str, ops: int, runs: int) -> None:
    class Item(HashModel, index=True):  # type: ignore[misc, call-arg]
        title: str
        status: str
        priority: int
        created_at: dt.datetime

        class Meta:
            database = get_redis_connection(url=url)
            global_key_prefix = prefix

    epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    samples: dict[str, list[float]] = {"save": [], "get": []}
    pks: list[str] = []
    for run in range(runs):
        start = time.perf_counter()
        for n in range(ops):
            record = Item(
                title=f"item number {n}",
                status="open",
                priority=n % 10,
                created_at=epoch + dt.timedelta(seconds=run * ops + n),
            )
            await record.save()
            pks.append(record.pk)
        samples["save"].append((time.perf_counter() - start) / ops * 1e6)
        start = time.perf_counter()
        for n in range(ops):
            assert await Item.get(pks[n]) is not None
        samples["get"].append((time.perf_counter() - start) / ops * 1e6)
    database = Item.Meta.database
    keys = [key async for key in database.scan_iter(match=f"{prefix}*")]
    for index in range(0, len(keys), 1000):
        await database.delete(*keys[index : index + 1000])
    print(json.dumps(samples))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
