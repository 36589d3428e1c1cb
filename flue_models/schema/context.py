"""What a migration file's ``up(ctx)`` and ``down(ctx)`` receive.

Example:
    ```python
    async def up(ctx: MigrationContext) -> None:
        await ctx.rebuild_indexes(Ticket)
    ```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from flue_models.connection import Database
from flue_models.errors import SchemaError
from flue_models.model.base import Model, iter_hashes
from flue_models.model.query import Page
from flue_models.model.verify import scan_collection
from flue_models.model.writes import Write, plan_save, run_writes
from flue_models.replies import reply_text
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

    def __init__(
        self,
        db: Database,
        file: MigrationFile,
        lock: MigrationLock,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.file = file
        self._lock = lock
        self._progress = progress

    def report(self, text: str) -> None:
        """Show a progress line (on a terminal, when run by ``flue-models migrate``).

        Example:
            ```python
            ctx.report(f"{done} of {total} tickets fixed")
            ```
        """
        if self._progress is not None:
            self._progress(f"{self.file.label}: {text}")

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
        done = 0
        while True:
            page: Page[Any] = await query.page(limit=size, cursor=cursor)
            if page.items:
                yield page.items
                done += len(page.items)
                self.report(f"{done} {model.__flue_spec__.collection} record(s)")
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
            await self._lock.record(self.db, {cursor_field: cursor}, [])

    async def rebuild_indexes(self, model: type[Model]) -> int:
        """Drop and rebuild every index of ``model``'s collection from its records.

        Each record is rewritten through the one write path (so it also records the
        entries it now owns, and takes a new version); a concurrent writer makes the
        migration fail with a conflict rather than lose its write. Idempotent: a rerun
        after a failure starts over and ends with the same indexes. Returns the number
        of records found.

        Raises:
            SchemaError: a record is in another bucket than its id calls for (nothing of
                its bucket's batch is written).

        Example:
            ```python
            async def up(ctx: MigrationContext) -> None:
                await ctx.rebuild_indexes(Ticket)   # after adding Indexed() to a field
            ```
        """
        db = self.db
        found = await scan_collection(db, model.__flue_spec__.collection)
        derived, records = found.indexes + found.uniques, found.records
        if derived:
            await db.client.delete(*derived)
        done = 0
        async for batch in iter_hashes(db, records):
            done += len(batch)
            self.report(f"reindexing {done} of {len(records)} {model.__flue_spec__.collection}")
            by_bucket: dict[int, list[Write]] = {}
            for key, raw in batch:
                if isinstance(raw, Exception):
                    continue  # not a record hash: verify reports it
                record = model.from_hash(key, raw, db)
                bucket = model.__flue_spec__.keys_for(db.keys, record).bucket
                if bucket != found.buckets[key]:
                    raise SchemaError(
                        f"{key} is in bucket {found.buckets[key]} but its "
                        f"{model.__flue_spec__.partition_by} puts it in bucket {bucket}; run "
                        "`flue-models cluster split` to move it, then again."
                    )
                write = plan_save(record, db.keys, owns_nothing=True)  # dropped above
                by_bucket.setdefault(bucket, []).append(write)
            for writes in by_bucket.values():  # one atomic call per bucket
                await run_writes(db, writes)
        return len(records)
