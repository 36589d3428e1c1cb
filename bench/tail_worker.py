"""A tail in its own process, for the wake-up latency benchmark: prints ``ready``, then the
time (``time.time_ns()``) each event arrives, one per line, until it has seen ``count``.

Usage: ``python -m bench.tail_worker flue|raw URL PREFIX PATH EVENTS_KEY COUNT``
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

import flue_models as fm


async def flue(url: str, prefix: str, path: str, count: int) -> None:
    async with fm.connect(url, key_prefix=prefix, migrate=False, inspect_server=False) as db:
        stream = fm.EventStream(path, db=db)
        seen = 0
        print("ready", flush=True)
        async for _event in stream.tail():
            print(time.time_ns(), flush=True)
            seen += 1
            if seen == count:
                return


async def raw(url: str, key: str, count: int) -> None:
    client = aioredis.Redis.from_url(url)
    last = "0"  # the stream is new: from its start, so nothing slips in before the first read
    seen = 0
    print("ready", flush=True)
    while seen < count:
        for _stream, events in await client.xread({key: last}, block=0, count=100):
            for event_id, _fields in events:
                print(time.time_ns(), flush=True)
                last = event_id
                seen += 1
    await client.aclose()


def main() -> None:
    mode, url, prefix, path, key, count = sys.argv[1:7]
    if mode == "flue":
        asyncio.run(flue(url, prefix, path, int(count)))
    else:
        asyncio.run(raw(url, key, int(count)))


if __name__ == "__main__":
    main()
