"""Billing's first step."""

DESCRIPTION = "create the billing marker"

from flue_models.schema import MigrationContext  # noqa: E402


async def up(ctx: MigrationContext) -> None:
    await ctx.db.client.rpush(ctx.db.keys.absolute("steps"), "billing-1")
