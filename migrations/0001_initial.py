"""Start the schema record.

The first release's layout needs no data changes: this file marks the store as
versioned, so later files know where they start from.
"""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    """Nothing to change: the layout of version 1 is what the library writes."""
