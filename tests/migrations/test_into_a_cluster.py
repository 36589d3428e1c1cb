"""The way into a cluster, end to end and counted: a store written on a standalone server
is copied into a local three-primary cluster with ``redis-cli --cluster import``, and the
library reads all of it from the cluster."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import flue_models as fm
from flue_models.keys import bucket_of
from flue_models.slots import slot_of
from tests.conftest import RedisProcess, RedisServers
from tests.integration.store_contents import all_keys, fill, readable_everywhere

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


async def test_a_standalone_store_moves_into_a_cluster_with_nothing_lost(
    servers: Servers, key_prefix: str
) -> None:
    standalone, nodes = servers.standalone, servers.cluster
    async with fm.connect(standalone.url, key_prefix=key_prefix) as db:
        await fill(db)
        written = await all_keys(db)
        runs = {
            bucket
            for k in written
            if (bucket := db.keys.bucket_in_key("workflow_run", k)) is not None
            and db.keys.in_bucket(bucket).classify("workflow_run", k) == "record"
        }
        assert sorted(runs) == sorted(bucket_of(i, 16) for i in ("r-1", "r-2"))
    await import_into(nodes[0], standalone)
    async with fm.connect(nodes[0].url, key_prefix=key_prefix) as db:
        assert db.report is not None
        assert len(db.report.primaries) == 3
        assert await all_keys(db) == written  # every key, under the same name
        holders = {db.client.get_node_from_key(key).name for key in written}  # type: ignore[union-attr]
        assert len(holders) > 1  # the buckets' and streams' tags spread it over the nodes
        assert len({slot_of(k) for k in written}) > 3
        await readable_everywhere(db)
        assert [s.file.label for s in await fm.schema.migrate(db)] == []
