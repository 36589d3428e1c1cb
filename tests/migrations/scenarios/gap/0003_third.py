"""Write a marker for the third step."""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    await ctx.db.client.rpush(f"{ctx.db.keys.prefix}:steps", "3")


async def down(ctx: MigrationContext) -> None:
    await ctx.db.client.lrem(f"{ctx.db.keys.prefix}:steps", 0, "3")
