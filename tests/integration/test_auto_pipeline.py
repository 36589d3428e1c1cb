"""Automatic pipelining on a real server: concurrent callers share pipelines, and each
still gets its own reply, its own error and its own retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import flue_models as fm
from flue_models import EventStream
from flue_models.client import FLUSH_AT, Coalescer
from tests.integration.models import Ticket
from tests.proxy import ReplyDropper


def coalescer(db: fm.Database) -> Coalescer:
    found = db.client.flue_coalescer
    assert found is not None
    return found


async def test_concurrent_calls_share_pipelines_and_get_their_own_replies(
    db: fm.Database,
) -> None:
    await Ticket.save_many(Ticket(id=f"t-{n}", status="open", priority=n) for n in range(200))
    before = coalescer(db).batched
    found = await asyncio.gather(*(Ticket.get(f"t-{n}") for n in range(200)))
    assert [t.priority if t else None for t in found] == list(range(200))
    assert coalescer(db).batched - before >= 150  # most went out in shared pipelines
    assert coalescer(db).in_flight == 0


async def test_a_full_queue_goes_out_before_the_loops_turn_ends(db: fm.Database) -> None:
    # One call in flight, then FLUSH_AT + 5 callers queue in the same turn: the first
    # FLUSH_AT leave at once (the server starts on them while the rest are queued), the
    # other 5 at the end of the turn; each caller still gets its own reply.
    await Ticket.save_many(Ticket(id=f"t-{n}", status="open", priority=n) for n in range(50))
    count = FLUSH_AT + 6
    before = (coalescer(db).batches, coalescer(db).batched)
    found = await asyncio.gather(*(Ticket.get(f"t-{n}") for n in range(count)))
    assert [t.priority if t else None for t in found] == list(range(count))
    after = (coalescer(db).batches, coalescer(db).batched)
    assert (after[0] - before[0], after[1] - before[1]) == (2, FLUSH_AT + 5)


async def test_a_sequential_caller_is_not_queued(db: fm.Database) -> None:
    before = (coalescer(db).batches, coalescer(db).batched)
    for n in range(20):
        await Ticket(id=f"t-{n}", status="open", priority=n).save()
        assert await Ticket.get(f"t-{n}") is not None
    assert (coalescer(db).batches, coalescer(db).batched) == before


async def test_an_error_reaches_only_its_caller(db: fm.Database) -> None:
    await db.client.set(db.keys.absolute("plain"), "x")
    calls = [db.client.get(db.keys.absolute("plain")) for _ in range(20)]
    calls.insert(10, db.client.hgetall(db.keys.absolute("plain")))  # WRONGTYPE
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[10], fm.errors.CommandError)
    assert "WRONGTYPE" in str(results[10])
    assert [r for i, r in enumerate(results) if i != 10] == [b"x"] * 20


async def test_a_blocking_read_is_never_queued_behind_others(db: fm.Database) -> None:
    stream = EventStream("s")
    await stream.create()
    key = db.keys.absolute("counter")

    async def tail_one() -> object:
        async for event in stream.tail():
            return event.data
        return None

    tailing = asyncio.create_task(tail_one())
    await asyncio.gather(*(db.client.incr(key) for _ in range(100)))  # not stuck behind it
    assert await db.client.get(key) == b"100"
    await stream.append({"n": 1})
    assert await asyncio.wait_for(tailing, timeout=10) == {"n": 1}


async def test_auto_pipeline_can_be_turned_off(
    redis_url: str, key_prefix: str, protocol: int
) -> None:
    async with fm.connect(
        redis_url, key_prefix=key_prefix, protocol=protocol, auto_pipeline=False
    ) as db:
        assert db.client.flue_coalescer is None
        key = db.keys.absolute("n")
        await asyncio.gather(*(db.client.incr(key) for _ in range(50)))
        assert await db.client.get(key) == b"50"
        await db.client.delete(key)


@pytest.fixture
async def dropper(redis_url: str) -> AsyncIterator[ReplyDropper]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with ReplyDropper(port).running() as proxy:
        yield proxy


async def test_a_lost_batch_is_retried_for_safe_calls_and_reported_for_unsafe_ones(
    dropper: ReplyDropper, key_prefix: str, protocol: int
) -> None:
    url = f"redis://127.0.0.1:{dropper.port}/0"
    async with fm.connect(url, key_prefix=key_prefix, protocol=protocol) as db:
        try:
            stream = EventStream("s")
            await stream.create()
            await stream.append({"n": 0})  # its script is loaded
            key = db.keys.absolute("k")
            await db.client.set(key, "v")
            queue = coalescer(db)
            queue.in_flight += 1  # as if a command were in flight: every call is queued
            try:
                dropper.drop_next_reply()  # the one batch's replies
                results = await asyncio.gather(
                    stream.append({"n": 1}),
                    *(db.client.get(key) for _ in range(10)),
                    return_exceptions=True,
                )
            finally:
                queue.in_flight -= 1
            lost = results[0]
            assert isinstance(lost, fm.ConnectionLostError)
            assert lost.unsafe  # it may or may not have run
            assert results[1:] == [b"v"] * 10  # safe reads were retried
            assert dropper.dropped == 1
            events = (await stream.read()).events
            assert [e.data for e in events] == [{"n": 0}, {"n": 1}]  # it ran once
        finally:
            keys = [k async for k in db.client.scan_iter(match=db.keys.pattern())]
            await db.client.delete(*keys)
