"""A batch's replies, read straight from hiredis's reader (``client.read_replies``), are
the replies redis-py's own pipeline returns: shaped by the same callbacks, an error in
its place, a reply that spans many socket reads whole, a RESP3 push not taken for one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import ConnectionPool
from redis.exceptions import ResponseError

import flue_models as fm
from flue_models.client import read_replies

pytestmark = pytest.mark.standalone  # compared with redis-py's pipeline to one server


@pytest.fixture
async def plain(redis_url: str, protocol: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url.split(",")[0], protocol=protocol)
    yield client
    await client.aclose()


def mixed(db: fm.Database) -> list[tuple[Any, ...]]:
    """Commands of one slot whose replies take every shape the library reads."""
    key = db.keys.absolute
    return [
        ("HSET", key("{b}h"), "f", "v", "g", "w"),
        ("HGETALL", key("{b}h")),
        ("HGETALL", key("{b}missing")),
        ("ZADD", key("{b}z"), 1.5, "a", 2, "b"),
        ("ZRANGE", key("{b}z"), 0, -1, "WITHSCORES"),
        ("SET", key("{b}s"), "x" * 2_000_000),  # many socket reads for one reply
        ("GET", key("{b}s")),
        ("INCR", key("{b}s")),  # an error reply, in its place
        ("XADD", key("{b}x"), "1-1", "d", "e"),
        ("XRANGE", key("{b}x"), "-", "+"),
        ("HMGET", key("{b}h"), "f", "nope"),
        ("EXISTS", key("{b}h"), key("{b}missing")),
        ("DEL", key("{b}h"), key("{b}z"), key("{b}s"), key("{b}x")),
    ]


def same(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for mine, expected in zip(ours, theirs, strict=True):
        if isinstance(expected, ResponseError):
            assert type(mine) is type(expected)
            assert str(mine) == str(expected)
        else:
            assert mine == expected


@pytest.mark.parametrize("atomic", [False, True], ids=["pipeline", "transaction"])
async def test_a_batch_reads_what_redis_pys_pipeline_reads(
    db: fm.Database, plain: aioredis.Redis, atomic: bool
) -> None:
    commands = mixed(db)
    async with plain.pipeline(transaction=atomic) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        theirs = await pipe.execute(raise_on_error=False)
    ours = await db.client.flue_many([(command, {}) for command in commands], atomic=atomic)
    same(ours, theirs)
    assert len(ours[6]) == 2_000_000
    assert isinstance(ours[7], ResponseError)


async def test_a_push_among_the_replies_is_not_taken_for_one(redis_url: str) -> None:
    """RESP3 client-side caching: an invalidation push arrives on the tracking connection
    ahead of the replies of its next batch; the batch still reads its own replies."""
    pool = ConnectionPool.from_url(redis_url.split(",")[0], protocol=3)
    other = aioredis.Redis(connection_pool=pool)
    tracking = await pool.get_connection()
    try:
        await tracking.send_command("CLIENT", "TRACKING", "ON")
        assert await tracking.read_response() == b"OK"
        await tracking.send_command("GET", "flue-test-tracked")
        await tracking.read_response()  # the key is tracked from here
        await other.set("flue-test-tracked", "changed")  # the server pushes "invalidate"
        commands = [("PING",), ("ECHO", "after the push"), ("GET", "flue-test-tracked")]
        await tracking.send_packed_command(tracking.pack_commands(commands))
        replies = await read_replies(tracking, len(commands))
        assert replies == [b"PONG", b"after the push", b"changed"]
    finally:
        await tracking.disconnect()
        await pool.release(tracking)
        await other.delete("flue-test-tracked")
        await other.aclose()
