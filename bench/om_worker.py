"""redis-om's side of the benchmarks, run in its own environment (``.bench-om``): save and
get on a ``HashModel`` (it cannot query a plain server).

It takes one step at a time, so its repetitions alternate with the other sides' in the
same run (``bench.harness.OmWorker``): it reads a line from stdin, ``save`` or ``get``,
runs ``OPS`` operations of that kind, and prints the microseconds per operation it
measured; ``end`` deletes what it wrote and exits. The gets read the records its saves
wrote, in turn.

Usage: ``.bench-om/bin/python bench/om_worker.py URL PREFIX OPS``
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time

from aredis_om import HashModel, get_redis_connection  # type: ignore[import-not-found]


async def main(url: str, prefix: str, ops: int) -> None:
    class Item(HashModel, index=True):  # type: ignore[misc, call-arg]
        title: str
        status: str
        priority: int
        created_at: dt.datetime

        class Meta:
            database = get_redis_connection(url=url)
            global_key_prefix = prefix

    epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    pks: list[str] = []
    done = 0
    for line in sys.stdin:
        step = line.strip()
        start = time.perf_counter()
        if step == "save":
            for n in range(done, done + ops):
                record = Item(
                    title=f"item number {n}",
                    status="open",
                    priority=n % 10,
                    created_at=epoch + dt.timedelta(seconds=n),
                )
                await record.save()
                pks.append(record.pk)
            done += ops
        elif step == "get":
            for n in range(ops):
                assert await Item.get(pks[n % len(pks)]) is not None
        else:
            break
        print((time.perf_counter() - start) / ops * 1e6, flush=True)
    database = Item.Meta.database
    keys = [key async for key in database.scan_iter(match=f"{prefix}*")]
    for index in range(0, len(keys), 1000):
        await database.delete(*keys[index : index + 1000])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
