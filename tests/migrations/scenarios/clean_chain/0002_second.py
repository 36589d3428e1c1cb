"""Write a marker for the second step."""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    await ctx.db.client.rpush(ctx.db.keys.absolute("steps"), "2")


async def down(ctx: MigrationContext) -> None:
    await ctx.db.client.lrem(ctx.db.keys.absolute("steps"), 0, "2")
