"""Give every item a priority."""

from inventory_models import Item

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    # Resumable: after each batch its position is kept, so a rerun skips done batches.
    async for batch in ctx.batches(Item, size=2):
        missing = [item for item in batch if item.priority is None]
        for item in missing:
            item.priority = 0
        await Item.save_many(missing, db=ctx.db)


async def down(ctx: MigrationContext) -> None:
    async for batch in ctx.batches(Item, size=2):
        for item in batch:
            item.priority = None
        await Item.save_many(batch, db=ctx.db)
