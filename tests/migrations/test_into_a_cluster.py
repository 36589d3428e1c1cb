"""The way into a cluster, end to end and counted: a store written in the layout before
``0005_hash_tags`` on a standalone server is migrated there, then copied into a local
three-primary cluster with ``redis-cli --cluster import``, and the library reads all of it
from the cluster."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import flue_models as fm
from flue_models.errors import MigrationFailedError
from flue_models.keys import bucket_of
from flue_models.slots import slot_of
from tests.conftest import RedisProcess, RedisServers
from tests.migrations.test_hash_tags import (
    HASH_TAGS,
    all_keys,
    readable_everywhere,
    write_in_older_layout,
)

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="no redis-cli")


async def import_into(node: RedisProcess, standalone: RedisProcess) -> None:
    """``redis-cli --cluster import``: every key of ``standalone`` into the cluster."""
    copied = await asyncio.to_thread(
        subprocess.run,
        [
            "redis-cli", "--cluster", "import", f"127.0.0.1:{node.port}",
            "--cluster-from", f"127.0.0.1:{standalone.port}", "--cluster-copy",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stdout[-2000:] + copied.stderr[-2000:]


@dataclass
class Servers:
    standalone: RedisProcess
    cluster: list[RedisProcess]


@pytest.fixture
def servers(redis_servers: RedisServers) -> Iterator[Servers]:
    """A standalone server and a three-primary cluster of their own, killed afterwards."""
    found = Servers(redis_servers.start(), redis_servers.start_cluster())
    yield found
    for node in [found.standalone, *found.cluster]:
        node.kill()


async def older_store(url: str, key_prefix: str) -> list[str]:
    """Write one of everything in the layout before 0005 at ``url``; return its keys."""
    async with fm.connect(url, key_prefix=key_prefix) as db:
        await write_in_older_layout(db)
        return await all_keys(db)


async def test_a_standalone_store_moves_into_its_tags_then_into_a_cluster_with_nothing_lost(
    servers: Servers, key_prefix: str
) -> None:
    standalone, nodes = servers.standalone, servers.cluster
    written = await older_store(standalone.url, key_prefix)
    with pytest.raises(fm.SchemaLayoutError):
        await fm.connect(standalone.url, key_prefix=key_prefix, migrate=False)
    async with fm.connect(
        standalone.url, key_prefix=key_prefix, migrate=False, check_schema=False
    ) as db:
        await fm.schema.migrate(db, to=5)
        assert len(await all_keys(db)) == len(written)  # counted: one key for each key
        await fm.schema.migrate(db)  # 0006: the runs into their buckets
        moved = await all_keys(db)
        runs = {
            k: bucket
            for k in moved
            if (bucket := db.keys.bucket_in_key("workflow_run", k)) is not None
            and db.keys.in_bucket(bucket).classify("workflow_run", k) == "record"
        }
        assert sorted(runs.values()) == sorted(bucket_of(i, 16) for i in ("r-1", "r-2"))
    await import_into(nodes[0], standalone)
    async with fm.connect(nodes[0].url, key_prefix=key_prefix) as db:
        assert db.report is not None
        assert len(db.report.primaries) == 3
        assert await all_keys(db) == moved  # every key, under the same name
        holders = {db.client.get_node_from_key(key).name for key in moved}  # type: ignore[union-attr]
        assert len(holders) > 1  # the streams' own tags spread the store over the nodes
        assert len({slot_of(k) for k in moved}) > 3
        await readable_everywhere(db)
        assert [s.file.label for s in await fm.schema.migrate(db)] == []
        assert HASH_TAGS in [s.label for s in (await fm.schema.schema_status(db))[0].applied]


async def test_a_store_of_the_older_layout_on_a_cluster_is_refused_before_any_write(
    servers: Servers, key_prefix: str
) -> None:
    standalone, nodes = servers.standalone, servers.cluster
    written = await older_store(standalone.url, key_prefix)
    await import_into(nodes[0], standalone)
    with pytest.raises(MigrationFailedError) as failed:
        await fm.connect(nodes[0].url, key_prefix=key_prefix)
    assert "standalone server" in str(failed.value.__cause__)
    async with fm.connect(
        nodes[0].url, key_prefix=key_prefix, migrate=False, check_schema=False
    ) as db:
        assert await all_keys(db) == written  # nothing was moved or rewritten
