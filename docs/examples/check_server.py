"""Connect, print what the start-up inspection found, and use the client."""

import asyncio

import flue_models as fm
from flue_models.connection import current_database


async def main() -> None:
    # REDIS_URL if set, else an embedded redis-server with its data in ./.flue/redis
    async with fm.connect(key_prefix="quickstart") as db:
        assert db.report is not None
        print("\n".join(db.report.lines()))
        await db.client.set(f"{db.keys.prefix}:hello", "world")
        print("hello =", (await db.client.get(f"{db.keys.prefix}:hello")).decode())

    # --8<-- [start:await]
    db = await fm.connect(key_prefix="quickstart")
    try:
        print("bound:", current_database() is db)
    finally:
        await db.close()  # idempotent
    # --8<-- [end:await]


if __name__ == "__main__":
    asyncio.run(main())
