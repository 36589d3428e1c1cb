"""The migration lock: one migrating process per prefix, fenced writes to the record.

Example:
    ```python
    lock = MigrationLock(db)
    await lock.acquire(db, wait=60)
    try:
        await lock.record(db, {"schema_version": "2"}, [])
    finally:
        await lock.release(db)
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from flue_models.connection import Database
from flue_models.errors import MigrationLockError

#: Lock time to live; the holder renews it every third of this while it runs.
LOCK_TTL_MS = 30_000
#: How long a start-up waits for another process's migration before giving up.
LOCK_WAIT_SECONDS = 60.0


class MigrationLock:
    """The migration lock: ``SET NX PX``, renewed while held, released only by its owner.

    Example:
        ```python
        lock = MigrationLock(db)
        await lock.acquire(db, wait=60)
        await lock.release(db)
        ```
    """

    def __init__(self, db: Database) -> None:
        self.key = db.keys.migration_lock
        self.owner = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, db: Database, wait: float) -> None:
        """Take the lock (``SET NX PX``), waiting up to ``wait`` seconds; keep renewing it.

        Raises:
            MigrationLockError: another process held it for the whole wait.

        Example:
            ```python
            await lock.acquire(db, wait=60)
            ```
        """
        deadline = time.monotonic() + wait
        delay = 0.05
        while not await self._take(db):
            if time.monotonic() > deadline:
                raise MigrationLockError(self.key, wait)
            await asyncio.sleep(delay)  # another process migrates: wait for it
            delay = min(delay * 2, 1.0)
        self._renewer = asyncio.create_task(self._renew(db))

    async def _take(self, db: Database) -> bool:
        if await db.client.set(self.key, self.owner, nx=True, px=LOCK_TTL_MS):
            return True
        # A SET retried after its reply was lost finds the lock it took: ours.
        return bool(await db.client.get(self.key) == self.owner.encode())

    async def _renew(self, db: Database) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_MS / 3000)
            await db.scripts.call("lock_renew", keys=[self.key], args=[self.owner, LOCK_TTL_MS])

    async def release(self, db: Database) -> None:
        """Stop renewing and delete the lock if this owner still holds it.

        Example:
            ```python
            await lock.release(db)
            ```
        """
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await db.scripts.call("lock_release", keys=[self.key], args=[self.owner])

    async def record(self, db: Database, values: dict[str, str], remove: list[str]) -> None:
        """Set ``values`` and delete ``remove`` in the schema record, fenced on still
        holding the lock (one script call).

        Raises:
            MigrationLockError: the lock was lost (expired and taken by another process).

        Example:
            ```python
            await lock.record(db, {"schema_version": "2"}, ["cursor:flue:0002:ticket"])
            ```
        """
        args: list[Any] = [self.owner, len(values)]
        for name, value in values.items():
            args += [name, value]
        args += [len(remove), *remove]
        if not await db.scripts.call("schema_record", keys=[db.keys.meta, self.key], args=args):
            raise MigrationLockError(self.key, LOCK_TTL_MS / 1000)
