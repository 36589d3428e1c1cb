"""Declaring a model with another bucket count for a while: what an older version of the
library declared (to write a store the way it wrote it), or a redeploy with a new count."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

import flue_models as fm
from flue_models.connection import Database
from flue_models.errors import MigrationFailedError
from flue_models.model.base import Model
from flue_models.startup import Connecting


@contextmanager
def declaring(model: type[Model], buckets: int, partition_by: str = "id") -> Iterator[None]:
    """``model`` as if its Meta said ``buckets = N`` (and ``partition_by``) until the
    block ends."""
    spec = model.__flue_spec__
    model.__flue_spec__ = dataclasses.replace(spec, buckets=buckets, partition_by=partition_by)
    try:
        yield
    finally:
        model.__flue_spec__ = spec


def unmigrated(redis_url: str, key_prefix: str) -> Connecting:
    """Connect without migrating or checking the schema: to look at a store of an older
    version and migrate it by hand (``async with unmigrated(...) as db``, or awaited)."""
    return fm.connect(redis_url, key_prefix=key_prefix, migrate=False, check_schema=False)


@asynccontextmanager
async def refused_for_another_client(redis_url: str, key_prefix: str) -> AsyncIterator[Database]:
    """Another client of the prefix, while ``connect()`` (which migrates) is refused for
    it; yields that client, to look at what the refused migration left."""
    other = await unmigrated(redis_url, key_prefix)
    try:
        with pytest.raises(MigrationFailedError) as failed:
            await fm.connect(redis_url, key_prefix=key_prefix)
        assert isinstance(failed.value.__cause__, fm.WritersActiveError)
        yield other
    finally:
        await other.close()


async def remove_prefix(redis_url: str, key_prefix: str) -> None:
    """Delete every key of ``key_prefix`` (a store left at an older version)."""
    async with unmigrated(redis_url, "admin") as db:
        for key in [k async for k in db.client.scan_iter(match=f"{key_prefix}::*")]:
            await db.client.delete(key)
