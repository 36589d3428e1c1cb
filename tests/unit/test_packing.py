"""Commands are packed byte for byte as redis-py packs them, on the fast path and off it,
and refused the same way."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Connection
from redis.exceptions import DataError

from flue_models.client import timed_send

CASES: list[tuple[Any, ...]] = [
    ("HGET", b"key", "field"),
    ("EVALSHA", "a" * 40, 2, "k1", b"k2", "é", b"\x00\xff", -17, 0, 2**70),
    ("CONFIG GET", "maxmemory-policy"),  # redis-py splits the name: the slow path
    ("ZADD", "z", 1.5, "m"),  # a float: redis-py's own formatting
    ("SET", "k", memoryview(b"view")),
    ("PING",),
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: str(a[0]))
def test_a_command_is_packed_as_redis_py_packs_it(args: tuple[Any, ...]) -> None:
    ours, theirs = timed_send(Connection)(), Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))


@pytest.mark.parametrize(
    ("args", "error"),
    [(("SET", "k", True), DataError), (("SET", "k", "\udcff"), UnicodeEncodeError)],
    ids=["a bool", "a lone surrogate"],
)
def test_what_redis_py_refuses_is_refused_the_same_way(
    args: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Connection().pack_command(*args)
    with pytest.raises(error):
        timed_send(Connection)().pack_command(*args)
