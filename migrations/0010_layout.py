"""Stamp the store with the layout this version writes (layout 10).

flue-models is unreleased, so its own migration set is this one file: the stored layout
(``DESIGN.md``, "Storage layout") is what the library writes, and a new store needs no
data changes, only the schema record this file stamps. The file's number is the layout's
version. A change of the stored format renames it to the next number, so a store of an
older layout is refused with a message saying what to do (it is never misread), and a
store of this one is accepted as it is.
"""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    """Nothing to move: a new store is written in this layout from its first key."""
