"""Shared by the runnable examples: leave the server as they found it."""

import flue_models as fm


async def delete_prefix(db: fm.Database) -> None:
    """Delete every key under the database's prefix (what an example wrote)."""
    keys = [key async for key in db.client.scan_iter(match=db.keys.pattern())]
    if keys:
        await db.client.delete(*keys)
