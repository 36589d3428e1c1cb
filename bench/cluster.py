"""Throughput on one primary and on a three-primary cluster.

Starts the suite's servers (the embedded Valkey, or ``$FLUE_REDIS_SERVER``) on free
ports: one standalone server and a cluster of three primaries. On each, ``--writers``
concurrent tasks write as fast as they can, two ways in this process: flue-models, and
raw redis-py doing the same Redis work (the same script shapes, on keys of the same hash
tags): event appends, each writer to a stream of its own (each stream has its own slot,
so they spread over the primaries), and model saves (one collection is one bucket, one
slot: one primary takes them all); then one caller reads 100 records in one batch. Each
figure is the median of ``--runs`` repetitions of microseconds per operation across all
writers; the ratio is raw redis-py's time over flue-models'.

Run it with ``python -m bench.cluster [--json] [--writers N] [--ops N] [--runs N]``. On
a machine with fewer cores than servers plus the client, the client and the servers
share the cores, so read the 1-versus-3 comparison as what the layout allows, not as
the scaling a cluster of machines gives.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

import flue_models as fm
from bench.harness import Row, repeat_once, table
from bench.workloads import RAW_APPEND, RAW_SAVE
from flue_models import Indexed, Model
from flue_models.keys import bucket_of
from flue_models.slots import CHECK_SLOTS_ENV
from tests.conftest import RedisServers


class Item(Model):
    """What the saves write: one indexed field, ordered by creation."""

    class Meta:
        collection = "bench_citem"
        order_by = "created_at"

    id: str
    status: Annotated[str, Indexed()]
    created_at: dt.datetime = fm.now()


class SpreadItem(Model):
    """``Item`` over 16 buckets: its saves spread over 16 slots."""

    class Meta:
        collection = "bench_citem16"
        order_by = "created_at"
        buckets = 16

    id: str
    status: Annotated[str, Indexed()]
    created_at: dt.datetime = fm.now()


def listed(buckets: int) -> type[Model]:
    """A model over ``buckets`` buckets for the listing rows (one class per count)."""

    count = buckets

    class Listed(Model):
        class Meta:
            collection = f"bench_list{count}"
            order_by = "created_at"
            buckets = count

        id: str
        status: Annotated[str, Indexed()]
        created_at: dt.datetime = fm.now()

    return Listed


#: Bucket counts of the listing rows, and the records each collection holds.
LISTING_BUCKETS = (1, 4, 16, 64)
LISTING_RECORDS = 4000
LISTED = {buckets: listed(buckets) for buckets in LISTING_BUCKETS}


Side = Callable[[int], Awaitable[int]]
#: One operation of one writer: ``(writer, n)``.
Step = Callable[[int, int], Awaitable[None]]


def concurrently(writers: int, ops: int, one: Callable[[int, int], Awaitable[Any]]) -> Side:
    """A side doing ``ops`` operations split over ``writers`` tasks (``one(writer, n)``)."""

    async def side(run: int) -> int:
        each = ops // writers

        async def writer(w: int) -> None:
            for n in range(each):
                await one(w, run * ops + w * each + n)

        await asyncio.gather(*(writer(w) for w in range(writers)))
        return each * writers

    return side


async def measure(url: str, raw: Any, writers: int, ops: int, runs: int) -> list[Row]:
    """Both workloads on the server (or cluster) at ``url``; ``raw`` is a client of it."""
    stamp = time.time_ns()
    prefix, raw_prefix = f"bench-cl-{stamp}", f"bench-clraw-{stamp}"
    db = await fm.connect(url, key_prefix=prefix)
    append = raw.register_script(RAW_APPEND)
    save = raw.register_script(RAW_SAVE)
    payload = {"type": "log", "message": "x" * 64}
    try:
        streams = [fm.EventStream(f"bench/{w}", db=db) for w in range(writers)]
        for stream in streams:
            await stream.create()
        for w in range(writers):
            await raw.hset(f"{raw_prefix}::{{stream:{w}}}", mapping={"seq": 0})

        async def flue_append(w: int, _n: int) -> None:
            await streams[w].append(payload)

        async def raw_append(w: int, _n: int) -> None:
            tag = f"{raw_prefix}::{{stream:{w}}}"
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"))  # as ours, per call
            await append(keys=[tag, f"{tag}:events"], args=[text])

        def saves(model: type[Model], buckets: int) -> tuple[Step, Step]:
            """Saves of ``model``, and raw saves into the same number of tags."""

            async def flue_save(_w: int, n: int) -> None:
                await model(id=f"i-{n}", status="open").save(db=db)

            async def raw_save(_w: int, n: int) -> None:
                base = f"{raw_prefix}::{{item{buckets}:{bucket_of(f'i-{n}', buckets)}}}"
                keys = [f"{base}:version", f"{base}:i-{n}", f"{base}:all"]
                keys.append(f"{base}:idx:status:open")
                score = time.time() * 1000
                await save(keys=keys, args=[f"i-{n}", 0, score, "id", f"i-{n}", "status", "open"])

            return flue_save, raw_save

        rows = []
        for name, (flue, baseline) in (
            ("event append, a stream per writer", (flue_append, raw_append)),
            ("model save, one collection", saves(Item, 1)),
            ("model save, 16 buckets", saves(SpreadItem, 16)),
        ):
            fl, rw = await repeat_once(
                runs, concurrently(writers, ops, flue), concurrently(writers, ops, baseline)
            )
            rows.append(Row(f"{name}, {writers} writers", ops, fl, rw))
        ids = [f"r-{n}" for n in range(100)]
        raw_rows = [f"{raw_prefix}::{{item:0}}:{i}" for i in ids]
        await Item.save_many([Item(id=i, status="open") for i in ids], db=db)
        for key, record_id in zip(raw_rows, ids, strict=True):
            await raw.hset(key, mapping={"id": record_id, "status": "open", "version": 1})

        async def flue_read(_n: int) -> int:
            assert all(item is not None for item in await Item.get_many(ids, db=db))
            return 1

        async def raw_read(_n: int) -> int:
            async with raw.pipeline(transaction=False) as pipe:
                for key in raw_rows:
                    pipe.hgetall(key)
                assert all(await pipe.execute())
            return 1

        fl, rw = await repeat_once(max(runs, 20), flue_read, raw_read)
        rows.append(Row("get_many of 100 records, one caller", 1, fl, rw))
        rows += await listing_rows(db, raw, runs)
        return rows
    finally:
        for pattern in (f"{prefix}::*", f"{raw_prefix}::*"):
            async for key in raw.scan_iter(match=pattern, count=1000):
                await raw.delete(key)
        await db.close()


async def listing_rows(db: fm.Database, raw: Any, runs: int) -> list[Row]:
    """A page of 100 of the open records (half of them), newest first, from a collection
    in 1, 4, 16 and 64 buckets; the baseline is raw redis-py reading the one-bucket
    collection's index and rows (one ZREVRANGE, then 100 HGETALL in one pipeline)."""
    for model in LISTED.values():
        await model.save_many(
            [
                model(id=f"l-{n}", status="open" if n % 2 else "done")
                for n in range(LISTING_RECORDS)
            ],
            db=db,
        )
    one = LISTED[1].__flue_spec__.collection
    index, keys = db.keys.index(one, "status", b"open"), db.keys

    async def raw_page(_n: int) -> int:
        ids = await raw.zrevrange(index, 0, 99)
        async with raw.pipeline(transaction=False) as pipe:
            for record_id in ids:
                pipe.hgetall(keys.record(one, record_id.decode()))
            assert len(await pipe.execute()) == 100
        return 1

    rows = []
    for buckets, model in LISTED.items():
        query = model.find(model.status == "open").sort_by("-created_at").using(db)  # type: ignore[attr-defined]

        async def flue_page(_n: int, query: Any = query) -> int:
            page = await query.page(limit=100)
            assert len(page.items) == 100
            return 1

        fl, rw = await repeat_once(max(runs, 20), flue_page, raw_page)
        rows.append(
            Row(f"page of 100 of {LISTING_RECORDS:,} records, {buckets} bucket(s)", 1, fl, rw)
        )
    return rows


async def run(writers: int, ops: int, runs: int) -> dict[str, list[Row]]:
    """Start the servers, measure both topologies, stop the servers."""
    # Importing the suite's server factory turned the suite's slot check on (a CRC16 of
    # every key of every script call, in the client); measure the library as it runs by
    # default, without it, and put it back after (the suite calls this too).
    check_slots = os.environ.pop(CHECK_SLOTS_ENV, None)
    servers = RedisServers(Path(tempfile.mkdtemp(prefix="flue-bench-cluster-")))
    try:
        standalone = servers.start()
        nodes = servers.start_cluster(3)
        plain = aioredis.Redis.from_url(standalone.url)
        cluster = RedisCluster(host="127.0.0.1", port=nodes[0].port)
        try:
            return {
                "1 primary": await measure(standalone.url, plain, writers, ops, runs),
                "3 primaries": await measure(nodes[0].url, cluster, writers, ops, runs),
            }
        finally:
            await plain.aclose()
            await cluster.aclose()
    finally:
        servers.close()
        if check_slots is not None:
            os.environ[CHECK_SLOTS_ENV] = check_slots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--ops", type=int, default=3200, help="operations per repetition")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.writers < 1 or args.ops < args.writers or args.runs < 1:
        parser.error("need writers >= 1, ops >= writers, runs >= 1")
    found = asyncio.run(run(args.writers, args.ops, args.runs))
    if args.json:
        print(json.dumps({k: [r.as_json() for r in rows] for k, rows in found.items()}))
        return 0
    for topology, rows in found.items():
        for row in rows:
            row.name = f"{row.name}, {topology}"
    print(table([row for rows in found.values() for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
