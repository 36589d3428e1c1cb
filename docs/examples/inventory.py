"""An application with its own migration set: add a field and backfill it, resumably."""

import asyncio
from pathlib import Path

from example_support import delete_prefix
from inventory_models import Item

import flue_models as fm
from flue_models.schema import MigrationSet


async def main() -> None:
    folder = Path(__file__).parent / "inventory_migrations"
    # Release 1 had no migrations of its own and wrote items without a priority.
    async with fm.connect(key_prefix="inventory-example") as db:
        await Item.save_many([Item(name=f"item {i}") for i in range(5)])
    # --8<-- [start:connect]
    inventory = MigrationSet("inventory", folder)
    async with fm.connect(key_prefix="inventory-example", migrations=[inventory]) as db:
        # --8<-- [end:connect]
        print(await Item.find(Item.priority >= 0).count(), "items have a priority")
        for status in await fm.schema.schema_status(db, [inventory]):
            print(status.name, "at", status.stored, "of", status.newest)
        await delete_prefix(db)


if __name__ == "__main__":
    asyncio.run(main())
