"""Count how often this runs."""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    await ctx.db.client.incr(ctx.db.keys.absolute("ups:2"))
