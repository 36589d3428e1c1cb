"""A separate process using the embedded server, driven by the embedded-server tests.

Usage: python embedded_client.py write KEY VALUE | read KEY | hold
``hold`` prints the server record as JSON once connected, then waits for a line on
stdin before closing, so a test can line up several processes deterministically.
"""

from __future__ import annotations

import asyncio
import json
import sys

import flue_models as fm


async def main(action: str, *args: str) -> None:
    async with fm.connect(key_prefix="embedded-test") as db:
        assert db.embedded is not None
        if action == "write":
            await db.client.set(db.keys.absolute(f"{args[0]}"), args[1])
        elif action == "read":
            value = await db.client.get(db.keys.absolute(f"{args[0]}"))
            print(value.decode() if value is not None else "<missing>")
        elif action == "hold":
            record = db.embedded.running()
            assert record is not None
            print(json.dumps({"pid": record.pid, "port": record.port, "binary": record.binary}))
            sys.stdout.flush()
            await asyncio.to_thread(sys.stdin.readline)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
