"""Write a marker for the third step."""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    await ctx.db.client.rpush(ctx.db.keys.absolute("steps"), "3")


async def down(ctx: MigrationContext) -> None:
    await ctx.db.client.lrem(ctx.db.keys.absolute("steps"), 0, "3")
