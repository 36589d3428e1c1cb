"""Fail until a key says the cause is fixed; process records in resumable batches."""

from flue_models.schema import MigrationContext
from tests.integration.models import Ticket


async def up(ctx: MigrationContext) -> None:
    keys = ctx.db.keys
    async for batch in ctx.batches(Ticket, size=3):
        for ticket in batch:
            await ctx.db.client.rpush(keys.absolute("visited"), ticket.id)
        if not await ctx.db.client.exists(keys.absolute("fixed")):
            raise RuntimeError("the cause is not fixed yet")
