"""A file that forgot its up()."""


async def upgrade(ctx: object) -> None:
    return None
