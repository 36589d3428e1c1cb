"""Count round trips to the server: each write of a request (or pipeline) is one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

import flue_models as fm


def on_cluster(db: fm.Database) -> bool:
    """Whether ``db`` talks to a Redis Cluster. A batch with a keyless command (``TIME``)
    is then one request more: the keyless one goes to another node, in parallel."""
    return isinstance(db.client, RedisCluster)


def connection_class_of(db: fm.Database) -> Any:
    """The class of ``db``'s connections (on a cluster, every node's are of one class)."""
    client: Any = db.client
    if isinstance(client, RedisCluster):
        return client.get_default_node().connection_class
    return client.connection_pool.connection_class


@contextmanager
def count_round_trips(db: fm.Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Yield a one-item list holding the number of requests sent on ``db`` so far."""
    counter = [0]
    connection_class = connection_class_of(db)
    original = connection_class.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    with monkeypatch.context() as patch:
        patch.setattr(connection_class, "send_packed_command", counting)
        yield counter


async def load_scripts(db: fm.Database, *names: str) -> None:
    """Load the library's scripts ``names`` on every primary (on one server: on it), so
    a counted call meets no ``NOSCRIPT`` whichever node its keys are on."""
    for name in names:
        await db.client.script_load(db.scripts.get(name).text)
