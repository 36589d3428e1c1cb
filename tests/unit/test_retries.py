"""How the client classifies a failure: what it retries, and what it lets through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ClusterError

from flue_models.client import RetryPolicy, with_retries
from flue_models.errors import ConnectionLostError

QUICK = RetryPolicy(retries=3, base=0.001, cap=0.001)


def lost_writer_in(filename: str) -> Callable[[], Any]:
    """A function that fails as redis-py's connection does when another task closed it
    (its writer is None), with its frame in ``filename``."""
    namespace: dict[str, Any] = {}
    code = "def send():\n    writer = None\n    writer.writelines([b'PING'])\n"
    exec(compile(code, filename, "exec"), namespace)
    return namespace["send"]  # type: ignore[no-any-return]


def failing_once(fail: Callable[[], Any]) -> Callable[[], Any]:
    calls = []

    async def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            fail()
        return "sent"

    return call


async def test_a_connection_closed_under_a_command_is_retried_even_when_unsafe() -> None:
    send = lost_writer_in("/venv/site-packages/redis/asyncio/connection.py")
    call = failing_once(send)
    assert await with_retries(call, QUICK, "redis://h", "XADD", unsafe=True) == "sent"


async def test_the_same_error_anywhere_else_is_not_taken_for_a_lost_connection() -> None:
    call = failing_once(lost_writer_in("/my/app/code.py"))
    with pytest.raises(AttributeError, match="writelines"):
        await with_retries(call, QUICK, "redis://h", "XADD", unsafe=True)


async def test_a_connection_closed_under_every_try_ends_as_a_lost_connection() -> None:
    send = lost_writer_in("/venv/site-packages/redis/asyncio/connection.py")

    async def always() -> None:
        send()

    with pytest.raises(ConnectionLostError, match="closed under the command") as lost:
        await with_retries(always, QUICK, "redis://h", "GET")
    assert isinstance(lost.value.__cause__.__cause__, AttributeError)  # type: ignore[union-attr]


async def test_a_cluster_ttl_exhausted_is_retried_even_when_unsafe() -> None:
    """redis-py raises ClusterError("TTL exhausted.") only after every attempt was
    redirected or refused (MOVED, ASK, TRYAGAIN): nothing ran, so even an unsafe command
    is sent again (a slot mid-move for longer than redis-py's own retries)."""

    def exhausted() -> None:
        raise ClusterError("TTL exhausted.")

    call = failing_once(exhausted)
    assert await with_retries(call, QUICK, "redis://h", "EVALSHA", unsafe=True) == "sent"

    async def always() -> None:
        exhausted()

    with pytest.raises(ConnectionLostError) as lost:
        await with_retries(always, QUICK, "redis://h", "EVALSHA", unsafe=True)
    assert lost.value.unsafe is False  # it never ran: nothing to reconcile


def test_a_clusters_refusal_names_the_node_and_its_cause() -> None:
    """TRYAGAIN, CLUSTERDOWN and redirects that never ended say resharding or failover
    and name the node they came from, not "check that the server is up" and the seed."""
    from redis.exceptions import ClusterDownError, ConnectionError as LostError, TryAgainError

    from flue_models.client import translate

    seed = "redis://10.0.0.5:7000/0"
    moving = TryAgainError("Multiple keys request during rehashing of slot")
    moving.flue_node = "10.0.0.6:7000"  # type: ignore[attr-defined]
    down = ClusterDownError("The cluster is down")
    down.flue_node = "10.0.0.7:7000"  # type: ignore[attr-defined]
    kept_moving = ClusterError("slot 12 was redirected 16 times in one call: it keeps moving")
    texts = [str(translate(e, seed, "EVALSHA")) for e in (moving, down, kept_moving)]
    assert "10.0.0.6:7000 (a node of the cluster at redis://10.0.0.5:7000/0)" in texts[0]
    assert "TRYAGAIN" in texts[0]
    assert "resharding" in texts[0]
    assert "10.0.0.7:7000" in texts[1]
    assert "failing over" in texts[1]
    assert "resharding" in texts[2]
    for text in texts:
        assert "check that the server is up" not in text
        assert text.startswith("The cluster kept refusing the call")
    lost = translate(LostError("Connection refused"), seed, "GET")  # not a cluster's
    assert "check that the server is up" in str(lost)
