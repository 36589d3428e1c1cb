"""A writer process for the client-kill test: it saves, updates and appends until it is
killed, printing one line per acknowledged write (flushed), so the test knows exactly
what was acknowledged when it sends SIGKILL.

Usage: python crash_writer.py URL PREFIX TAG
"""

from __future__ import annotations

import asyncio
import sys

import flue_models as fm
from tests.integration.models import Ticket


async def main(url: str, prefix: str, tag: str) -> None:
    async with fm.connect(url, key_prefix=prefix, inspect_server=False) as db:
        stream: fm.EventStream[dict[str, int]] = fm.EventStream(f"runs/{tag}", db=db)
        await stream.create()
        n = 0
        while True:
            ticket = await Ticket(id=f"{tag}-{n}", status="open", priority=n % 5).save()
            print(f"ticket {ticket.id} {ticket.version} open", flush=True)
            await ticket.update(status="closed", owner=f"o{n % 3}")
            print(f"ticket {ticket.id} {ticket.version} closed", flush=True)
            offset = await stream.append({"n": n})
            print(f"event {stream.path} {offset}", flush=True)
            n += 1


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
