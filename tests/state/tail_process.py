"""A second process that tails a stream and prints each event as one line.

Usage: python tail_process.py REDIS_URL PREFIX PATH
"""

from __future__ import annotations

import asyncio
import sys

import flue_models as fm
from flue_models.state.events import event_json


async def main(url: str, prefix: str, path: str) -> None:
    async with fm.connect(url, key_prefix=prefix, migrate=False) as db:
        stream: fm.EventStream[dict[str, object]] = fm.EventStream(path, db=db)
        async for event in stream.tail(after="-1"):
            print(event_json(event), flush=True)
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
