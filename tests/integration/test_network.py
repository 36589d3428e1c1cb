"""The network: lost replies, server restarts, a busy pool, one error hierarchy."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

import flue_models as fm
from flue_models import EventStream, RetryPolicy, Submission
from tests.conftest import RedisServers
from tests.integration.models import Ticket
from tests.proxy import ReplyDropper
from tests.waiting import poll_until, within

#: Fast retries, so tests that exhaust them stay quick.
QUICK = RetryPolicy(retries=2, base=0.01, cap=0.02)


@pytest.fixture
async def dropper(redis_url: str) -> AsyncIterator[ReplyDropper]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with ReplyDropper(port).running() as proxy:
        yield proxy


@pytest.fixture
async def via_proxy(
    dropper: ReplyDropper, key_prefix: str, protocol: int
) -> AsyncIterator[fm.Database]:
    """A database reached through the reply-dropping proxy."""
    url = f"redis://127.0.0.1:{dropper.port}/0"
    async with fm.connect(url, key_prefix=key_prefix, protocol=protocol) as db:
        yield db


async def test_a_read_whose_reply_is_lost_is_retried(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    await Ticket(id="t-1", status="open", priority=1).save()
    dropper.drop_next_reply()
    found = await Ticket.get("t-1")
    assert found is not None
    assert dropper.dropped == 1


async def test_a_new_record_whose_reply_is_lost_is_saved_not_already_there(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    await Ticket(id="t-0", status="open", priority=0).save()  # the script is loaded
    dropper.drop_next_reply()  # the create lands; the client retries it and meets it
    ticket = await Ticket(id="t-1", status="open", priority=1).save()
    assert dropper.dropped == 1
    stored = await Ticket.get("t-1")
    assert stored is not None
    assert ticket.version == stored.version  # the copy knows what it wrote
    ticket.priority = 2
    await ticket.save()  # and saves on from there
    with pytest.raises(fm.AlreadyExistsError):  # another copy is still refused
        await Ticket(id="t-1", status="open", priority=9).save()


async def test_an_append_whose_reply_is_lost_is_not_repeated(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    stream = EventStream("s")
    await stream.create()
    await stream.append({"n": 0})  # the script is loaded: the next call runs it at once
    dropper.drop_next_reply()
    with pytest.raises(fm.ConnectionLostError, match="may or may not have run") as lost:
        await stream.append({"n": 1})
    assert lost.value.unsafe is True
    events = (await stream.read()).events
    assert [e.data for e in events] == [{"n": 0}, {"n": 1}]  # it ran once, not again


async def test_an_idempotent_append_whose_reply_is_lost_is_retried_once(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    stream = EventStream("s")
    await stream.create()
    dropper.drop_next_reply()
    offset = await stream.append_once("k-1", {"n": 1})
    events = (await stream.read()).events
    assert [(e.offset, e.data) for e in events] == [(offset, {"n": 1})]
    assert dropper.dropped == 1


async def test_a_claim_whose_reply_is_lost_still_returns_the_attempt(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    dropper.drop_next_reply(2)  # the read goes through; then the write's reply is lost
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.attempt_id, row.attempt_count) == ("running", attempt.attempt_id, 1)


async def test_a_finish_from_the_kept_row_whose_reply_is_lost_reports_success(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    """The finish writes from the row its claim kept (no read); its reply is lost, so
    it is sent again, and the version check refuses the repeat: the finish reads the
    row, sees its own settling, and says True. Nothing is settled twice."""
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", session_id="s-1")
    assert attempt is not None
    dropper.drop_next_reply()  # the write lands, its reply is lost
    assert await Submission.finish(attempt) is True
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.outcome) == ("settled", "completed")
    assert (await fm.verify_collection(Submission)).ok


async def test_a_session_append_whose_reply_is_lost_is_retried_and_stored_once(
    via_proxy: fm.Database, dropper: ReplyDropper
) -> None:
    session = await fm.Session.open("s-1")
    await session.append(fm.MessageEntry(id="m0", role="user", content="hi"))  # loads it
    for entry_id in ("m1", "m2"):
        dropper.drop_next_reply()  # the write lands, its reply is lost: sent again
        await session.append(fm.MessageEntry(id=entry_id, role="user", content="hi"))
        assert session.leaf_id == entry_id
    loaded = await fm.Session.load("s-1")
    assert loaded is not None
    assert [(e.id, e.parent_id) for e in loaded.entries] == [
        ("m0", None),
        ("m1", "m0"),
        ("m2", "m1"),
    ]
    assert loaded.entry_count == 3


async def test_a_restarted_server_is_reconnected_to(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    async with fm.connect(server.url, key_prefix="restart") as db:
        await Ticket(id="t-1", status="open", priority=1).save()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)  # same port, same AOF
        found = await Ticket.get("t-1")  # the first call after the restart
        assert found is not None
        await Ticket(id="t-2", status="open", priority=2).save()
        assert await Ticket.find().count() == 2
        assert db.client.connection_pool is not None


async def test_the_first_write_after_a_restart_never_goes_out_on_a_dead_connection(
    redis_servers: RedisServers,
) -> None:
    """Idle pooled connections are dead after a restart: each is checked when handed out
    (redis-py's maintenance notifications, which skip that check, are off), so an unsafe
    write (a script) is sent on a live one and succeeds."""
    server = redis_servers.start()
    async with fm.connect(server.url, key_prefix="idle") as db:
        # CLIENT is never pipelined: four at once hold four connections, then idle.
        await asyncio.gather(*(db.client.execute_command("CLIENT", "ID") for _ in range(4)))
        assert len(db.client.connection_pool._available_connections) >= 2
        stream = EventStream("runs/r-1", db=db)
        await stream.create()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        first = await stream.append({"n": 1})  # the first command after the restart
        assert await stream.append({"n": 2}) > first
        await Ticket(id="t-1", status="open", priority=1).save()
        assert await Ticket.find().count() == 1


async def test_a_live_tail_resumes_after_a_restart(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    async with fm.connect(server.url, key_prefix="tail") as db:
        stream = EventStream("runs/r-1", db=db)
        await stream.create()
        await stream.append({"n": 1})
        seen: list[int] = []
        first = asyncio.Event()

        async def follow() -> None:
            async for event in stream.tail(after="-1"):
                seen.append(event.data["n"])
                first.set()

        tail = asyncio.create_task(follow())
        await within(first.wait(), "the tail's first event")
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await stream.append({"n": 2})
        await stream.close()
        await within(tail, "the tail to end after the restart")
        assert seen == [1, 2]


async def test_a_tail_gives_up_after_its_outage(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    async with fm.connect(server.url, key_prefix="gone", retry=QUICK) as db:
        stream = EventStream("runs/r-1", db=db)
        await stream.create()
        await asyncio.to_thread(server.kill)

        async def follow() -> None:
            async for _event in stream.tail(after="-1", outage=0.5):
                pass

        with pytest.raises(fm.ConnectionLostError):
            await within(follow(), "the tail to give up")


async def test_more_concurrent_calls_than_connections_wait_for_one(
    redis_url: str, key_prefix: str
) -> None:
    async with fm.connect(redis_url, key_prefix=key_prefix, pool_size=10):
        await Ticket(id="t-1", status="open", priority=1).save()
        found = await asyncio.gather(*(Ticket.get("t-1") for _ in range(150)))
        assert all(t is not None and t.id == "t-1" for t in found)


async def test_a_connection_taken_back_with_work_to_do_is_not_put_back_as_it_is(
    redis_url: str, key_prefix: str
) -> None:
    """The pool's quick way back (``FluePool.release``) is taken only by a connection
    with nothing to do: one marked for a reconnect is closed on its way back, and the
    next command reconnects it."""
    async with fm.connect(redis_url, key_prefix=key_prefix, pool_size=1) as db:
        pool = db.client.connection_pool
        connection = await pool.get_connection()
        await connection.send_command("CLIENT", "ID")
        before = await connection.read_response()
        connection.mark_for_reconnect()
        await pool.release(connection)
        assert not connection.is_connected
        assert pool._available_connections == [connection]
        assert await db.client.execute_command("CLIENT", "ID") != before  # a new connection


async def test_a_connection_taken_back_goes_to_a_caller_waiting_for_it(
    redis_url: str, key_prefix: str
) -> None:
    async with fm.connect(redis_url, key_prefix=key_prefix, pool_size=1, pool_timeout=5) as db:
        pool = db.client.connection_pool
        held = await pool.get_connection()
        waiting = asyncio.create_task(db.client.execute_command("PING"))

        async def caller_waits() -> bool:
            return bool(pool._condition._waiters)

        await poll_until(caller_waits, "the second caller to wait")
        await pool.release(held)
        assert await within(waiting, "the waiting caller's ping") is True
        assert pool._available_connections == [held]


async def test_a_pool_that_stays_busy_says_so(redis_url: str, key_prefix: str) -> None:
    async with fm.connect(redis_url, key_prefix=key_prefix, pool_size=1, pool_timeout=0.2) as db:
        key = db.keys.collection_key("t", "list")
        blocked = asyncio.create_task(db.client.blpop([key], timeout=2))
        await asyncio.sleep(0)  # let it take the only connection
        with pytest.raises(fm.errors.PoolExhaustedError, match="pool_size"):
            await within(db.client.get(key), "the pool refusal")
        await within(blocked, "the blocked pop")


async def test_a_write_the_server_does_not_read_ends_at_the_timeout(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    """A command is written under the reply timeout (``TimedSend``): a server that
    stops reading (SIGSTOP) turns a large write into a ``ConnectionLostError`` naming the
    write, and the client works again once the server does."""
    server = redis_servers.start()
    async with fm.connect(
        server.url, key_prefix=key_prefix, timeout=0.5, retry=RetryPolicy(retries=0)
    ) as db:
        key = db.keys.collection_key("t", "big")
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # more than the socket buffers hold
        try:
            with pytest.raises(fm.ConnectionLostError) as lost:
                await within(
                    db.client.execute_command("SET", key, b"x" * 64_000_000, flue_unsafe=True),
                    "the write to end at its timeout",
                )
        finally:
            server.process.send_signal(signal.SIGCONT)
        cause = lost.value.__cause__
        assert isinstance(cause, RedisTimeoutError)
        assert "writing" in str(cause)
        assert await within(db.client.ping(), "a ping once the server reads again")


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_a_reply_that_does_not_come_ends_at_the_timeout(
    redis_servers: RedisServers, key_prefix: str, auto_pipeline: bool
) -> None:
    """A lone command's reply is read under the timeout without a timer of its own
    (``TimedSend``'s watchdog): reads that answer keep working for longer than the
    timeout, a server that stops answering (SIGSTOP) is a ``ConnectionLostError`` at the
    timeout, for a get and for a save, and the late replies are never read as another
    command's."""
    server = redis_servers.start()
    async with fm.connect(
        server.url,
        key_prefix=key_prefix,
        timeout=0.3,
        retry=RetryPolicy(retries=0),
        auto_pipeline=auto_pipeline,
    ) as db:
        await Ticket(id="t-1", status="open", priority=1).save()
        loop = asyncio.get_running_loop()
        start = loop.time()
        reads = 0
        while loop.time() < start + 1.0:  # across several of the watchdog's turns
            assert (await Ticket.get("t-1")) is not None
            reads += 1
        assert reads > 3
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            for step in (lambda: Ticket.get("t-1"), lambda: Ticket(status="x", priority=2).save()):
                began = loop.time()
                with pytest.raises(fm.ConnectionLostError) as lost:
                    await within(step(), "the call to end at its timeout")
                assert loop.time() - began < 5  # the timeout, not the test's own deadline
                cause = lost.value.__cause__
                assert isinstance(cause, RedisTimeoutError)
                assert "reading" in str(cause)
        finally:
            server.process.send_signal(signal.SIGCONT)
        await db.client.set(db.keys.collection_key("t", "k"), "mine")
        assert await within(db.client.get(db.keys.collection_key("t", "k")), "a read") == b"mine"
        assert await within(Ticket.get("t-1"), "a get again") is not None


async def test_a_read_cancelled_by_its_caller_is_a_cancellation(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    """A caller that cancels a read waiting for its reply sees a cancellation, not a
    timeout, and the client works once the server answers."""
    server = redis_servers.start()
    async with fm.connect(
        server.url, key_prefix=key_prefix, timeout=5, retry=RetryPolicy(retries=0)
    ) as db:
        await db.client.ping()
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            reading = asyncio.ensure_future(db.client.get(db.keys.collection_key("t", "k")))

            async def sent() -> bool:
                return bool(db.client.connection_pool._in_use_connections)

            await poll_until(sent, "the read to be sent")
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await within(reading, "the cancelled read")
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert await within(db.client.ping(), "a ping once the server answers")


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_a_batch_whose_replies_stop_coming_ends_at_the_timeout(
    redis_servers: RedisServers, key_prefix: str, auto_pipeline: bool
) -> None:
    """A batch's replies are read under the batch's deadline (``FlueRedis.flue_many``):
    a server that stops answering mid-batch is a ``ConnectionLostError`` at the timeout,
    the connection is not handed out again with replies unread, and a long batch keeps
    its replies in order."""
    server = redis_servers.start()
    async with fm.connect(
        server.url,
        key_prefix=key_prefix,
        timeout=0.5,
        retry=RetryPolicy(retries=0),
        auto_pipeline=auto_pipeline,
    ) as db:
        keys = [db.keys.collection_key("t", f"k{i}") for i in range(250)]
        await db.run_batch([("SET", key, str(i)) for i, key in enumerate(keys)])
        assert await db.run_batch([("GET", key) for key in keys]) == [
            str(i).encode() for i in range(250)
        ]
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(fm.ConnectionLostError) as lost:
                await within(db.run_batch([("GET", key) for key in keys]), "the batch to end")
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert isinstance(lost.value.__cause__, RedisTimeoutError)
        replies = await within(db.run_batch([("GET", k) for k in keys[:3]]), "a batch again")
        assert replies == [b"0", b"1", b"2"]  # not the replies the stopped batch left


@pytest.mark.parametrize(
    "setting", [{"pool_size": 0}, {"pool_timeout": 0}, {"timeout": -1}], ids=str
)
async def test_bad_client_settings_are_refused(redis_url: str, setting: dict[str, float]) -> None:
    with pytest.raises(fm.ConfigurationError):
        await fm.connect(redis_url, **setting)  # type: ignore[arg-type]
