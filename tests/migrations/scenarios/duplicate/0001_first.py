"""Write a marker for the first step."""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    await ctx.db.client.rpush(ctx.db.keys.absolute("steps"), "1")


async def down(ctx: MigrationContext) -> None:
    await ctx.db.client.lrem(ctx.db.keys.absolute("steps"), 0, "1")
