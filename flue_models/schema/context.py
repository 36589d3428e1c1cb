"""What a migration file's ``up(ctx)`` and ``down(ctx)`` receive.

Example:
    ```python
    async def up(ctx: MigrationContext) -> None:
        await ctx.rebuild_indexes(Ticket)
    ```
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flue_models.connection import Database
from flue_models.model.base import Model
from flue_models.model.query import Page
from flue_models.model.verify import scan_collection
from flue_models.replies import reply_hash, reply_text
from flue_models.schema.files import MigrationFile
from flue_models.schema.lock import MigrationLock


class MigrationContext:
    """What a migration's ``up(ctx)`` / ``down(ctx)`` receives.

    Attributes:
        db: the database being migrated (``ctx.db.client`` for raw commands).
        file: the migration file running.

    Example:
        ```python
        async def up(ctx: MigrationContext) -> None:
            async for batch in ctx.batches(Ticket):
                for ticket in batch:
                    ticket.priority = ticket.priority or 0
                await Ticket.save_many(batch, db=ctx.db)
        ```
    """

    def __init__(self, db: Database, file: MigrationFile, lock: MigrationLock) -> None:
        self.db = db
        self.file = file
        self._lock = lock

    def _cursor_field(self, label: str) -> str:
        return f"cursor:{self.file.set_name}:{self.file.number:04d}:{label}"

    async def batches(self, model: type[Model], size: int = 500) -> AsyncIterator[list[Any]]:
        """Yield the records of ``model`` in batches, resuming where a failed run stopped.

        After each batch is processed (when the next one is requested) its position is
        kept in the schema record, so a rerun after a failure skips the batches already
        done. The position is cleared when the migration completes.

        Example:
            ```python
            async for batch in ctx.batches(Ticket, size=200):
                await Ticket.save_many([t for t in batch if fix(t)], db=ctx.db)
            ```
        """
        cursor_field = self._cursor_field(model.__flue_spec__.collection)
        saved = await self.db.client.hget(self.db.keys.meta, cursor_field)
        cursor = reply_text(saved) if saved else None
        query = model.find().using(self.db)
        while True:
            page: Page[Any] = await query.page(limit=size, cursor=cursor)
            if page.items:
                yield page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
            await self._lock.record(self.db, {cursor_field: cursor}, [])

    async def rebuild_indexes(self, model: type[Model]) -> int:
        """Drop and rebuild every index of ``model``'s collection from its records.

        Idempotent: a rerun after a failure starts over and ends with the same indexes.
        Returns the number of records indexed.

        Example:
            ```python
            async def up(ctx: MigrationContext) -> None:
                await ctx.rebuild_indexes(Ticket)   # after adding Indexed() to a field
            ```
        """
        db = self.db
        spec = model.__flue_spec__
        found = await scan_collection(db, spec.collection)
        derived, records = found.indexes + found.uniques, found.records
        if derived:
            await db.client.delete(*derived)
        for start in range(0, len(records), 500):
            chunk = records[start : start + 500]
            replies = await db.run_batch([("HGETALL", key) for key in chunk])
            commands: list[tuple[Any, ...]] = []
            for key, raw in zip(chunk, replies, strict=True):
                if not raw:
                    continue  # deleted meanwhile
                record = model._from_hash(key, reply_hash(raw), db)
                for entry_key, score in record._flue_entries.items():
                    commands.append(("ZADD", entry_key, repr(score), record.id))
                for unique_key, value in record._flue_unique.items():
                    commands.append(("HSET", unique_key, value, record.id))
            if commands:
                await db.run_batch(commands)
        return len(records)
