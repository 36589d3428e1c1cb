"""Replicated durability, opt in (``connect(wait_replicas=N)``): each write waits, on the
connection that wrote, for N replicas; fewer in time raise ``NotReplicatedError`` and the
write stands."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import flue_models as fm
from tests.conftest import RedisProcess, RedisServers
from tests.integration.models import Ticket

#: Seconds a write waits for its replica: long enough for a loaded CI machine (0.5 s
#: was not, once in a few runs), paid in full only by the writes meant to miss it.
WAIT_S = 3.0


@pytest.fixture
def replicated_pair(redis_servers: RedisServers) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """A primary and its replica, link up."""
    primary = redis_servers.start("--repl-diskless-sync-delay", "0")  # no 5 s wait
    replica = redis_servers.start("--replicaof", "127.0.0.1", str(primary.port))
    client, source = replica.sync_client(), primary.sync_client()
    try:
        deadline = time.monotonic() + 30
        # Up on both sides: the primary counts the replica (and WAIT does) only once the
        # replica acknowledged the snapshot, a moment after it says its link is up.
        while not (
            client.info("replication").get("master_link_status") == "up"
            and "online" in str(source.info("replication").get("slave0"))
        ):
            assert time.monotonic() < deadline, "the replica did not link up in 30 s"
            time.sleep(0.02)  # polling the servers' own state, under the deadline
        yield primary, replica
    finally:
        client.close()
        source.close()
        replica.kill()
        primary.kill()


async def test_each_write_waits_for_its_replica_and_a_missing_one_is_a_typed_error(
    replicated_pair: tuple[RedisProcess, RedisProcess], key_prefix: str
) -> None:
    primary, replica = replicated_pair
    with pytest.raises(fm.ServerCheckError, match="wait_replicas=2") as refused:
        await fm.connect(primary.url, key_prefix=key_prefix, wait_replicas=2)
    assert refused.value.found == "1"
    async with fm.connect(
        primary.url, key_prefix=key_prefix, wait_replicas=1, wait_timeout=WAIT_S
    ) as db:
        saved = await Ticket(id="t-1", status="open", priority=1).save()  # a script
        run = await fm.WorkflowRun.start("wf", input={})
        await run.events.append({"n": 1})
        await run.finish(result={"ok": True})  # a MULTI of two scripts
        raw_key = db.keys.record("it_ticket", "raw")
        await db.run_batch([("SET", raw_key, "1")])
        copy = replica.sync_client()  # what the replica holds, read on it
        try:
            found = copy.hgetall(db.keys.record("it_ticket", "t-1"))
        finally:
            copy.close()
        assert found[b"status"] == b"open"  # there when the save returned
        replica.kill()
        with pytest.raises(fm.NotReplicatedError) as lost:
            await saved.update(status="closed")
        assert (lost.value.wanted, lost.value.acknowledged) == (1, 0)
        assert "stands" in str(lost.value)
        stored = await Ticket.get("t-1")  # the write stands, and reads send no WAIT
        assert stored is not None
        assert stored.status == "closed"
        with pytest.raises(fm.NotReplicatedError, match="SET"):
            await db.run_batch([("SET", raw_key, "2")])
        assert await db.client.get(raw_key) == b"2"


async def test_a_second_database_on_the_same_client_waits_per_call(
    replicated_pair: tuple[RedisProcess, RedisProcess], key_prefix: str
) -> None:
    """WAIT per call: a database made with connect(client=other.client, wait_replicas=1)
    shares the other's connections; only writes through it wait for the replica."""
    primary, replica = replicated_pair
    async with fm.connect(primary.url, key_prefix=key_prefix) as plain:
        durable = await fm.connect(
            client=plain.client, key_prefix=key_prefix, wait_replicas=1, wait_timeout=WAIT_S
        )
        async with durable:
            assert durable.client.connection_pool is plain.client.connection_pool  # type: ignore[union-attr]
            await Ticket(id="t-1", status="open", priority=1).save(db=durable)
            replica.kill()
            await Ticket(id="t-2", status="open", priority=2).save(db=plain)  # no WAIT
            with pytest.raises(fm.NotReplicatedError):
                await Ticket(id="t-3", status="open", priority=3).save(db=durable)
        assert await Ticket.get("t-3", db=plain) is not None  # stands; plain still open
