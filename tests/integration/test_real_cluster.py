"""The tagged key layout on a real three-primary cluster: every script call and MULTI the
library sends while it writes one of everything lands in one slot, as the slot check
(``FLUE_CHECK_SLOTS``, on for the whole suite) promises; and a call the slot check refuses
is refused by the cluster too.

Connecting the library itself to a cluster is refused at start-up for now (see
docs/cluster.md); these tests replay what it sends on a standalone server, call by call,
through redis-py's ``RedisCluster``, which routes each call by its keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

import flue_models as fm
from flue_models.connection import Database
from flue_models.scripts import Scripts
from tests.conftest import RedisProcess, RedisServers
from tests.migrations.test_hash_tags import fill


@pytest.fixture(scope="module")
def cluster(redis_servers: RedisServers) -> Iterator[list[RedisProcess]]:
    nodes = redis_servers.start_cluster()
    yield nodes
    for node in nodes:
        node.kill()


@pytest.fixture
async def cluster_client(cluster: list[RedisProcess]) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    await client.initialize()
    yield client
    await client.aclose()


Call = tuple[str, Sequence[Any], Sequence[Any]]


async def record_calls(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Write one of everything on the standalone server, recording each script call
    ("script", keys, args) and each atomic batch ("MULTI", commands, ())."""
    calls: list[Call] = []
    call, run_batch = Scripts.call, Database.run_batch

    async def recorded_call(
        self: Scripts, name: str, keys: Any = (), args: Any = (), **kw: Any
    ) -> Any:
        calls.append((name, list(keys), list(args)))
        return await call(self, name, keys, args, **kw)

    async def recorded_batch(self: Database, commands: Any, **kw: Any) -> Any:
        if kw.get("atomic"):
            calls.append(("MULTI", [tuple(c) for c in commands], ()))
        return await run_batch(self, commands, **kw)

    monkeypatch.setattr(Scripts, "call", recorded_call)
    monkeypatch.setattr(Database, "run_batch", recorded_batch)
    await fill(db)
    monkeypatch.undo()
    return calls


async def test_every_call_of_a_workload_runs_in_one_slot_of_a_real_cluster(
    db: Database, cluster_client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await record_calls(db, monkeypatch)
    assert {name for name, _k, _a in calls} >= {"save", "stream_append", "stream_close", "MULTI"}
    for name, keys, args in calls:
        if name == "MULTI":
            async with cluster_client.pipeline(transaction=True) as pipe:
                for command in keys:
                    pipe.execute_command(*command)
                await pipe.execute(raise_on_error=False)
        else:
            text = db.scripts.get(name).text
            reply = await cluster_client.execute_command("EVAL", text, len(keys), *keys, *args)
            assert not isinstance(reply, ResponseError), (name, reply)
    copied = [k async for k in cluster_client.scan_iter(match=db.keys.pattern())]
    assert copied  # the replay wrote the workload's keys across the cluster's nodes


async def test_a_call_the_slot_check_refuses_is_refused_by_the_cluster(
    db: Database, cluster_client: RedisCluster
) -> None:
    a, b = db.keys.record("it_ticket", "x"), db.keys.stream("s").meta
    with pytest.raises(fm.CrossSlotError):
        await db.scripts.call("lock_release", keys=[a, b], args=["owner"])
    text = db.scripts.get("lock_release").text
    with pytest.raises(RedisClusterException):  # redis-py refuses it before sending
        await cluster_client.execute_command("EVAL", text, 2, a, b, "owner")
    node = cluster_client.get_node_from_key(a)
    raw = redis.Redis(host=node.host, port=node.port)
    try:
        with pytest.raises(ResponseError, match="same slot"):  # and so does the server (CROSSSLOT)
            raw.execute_command("EVAL", text, 2, a, b, "owner")
    finally:
        raw.close()
