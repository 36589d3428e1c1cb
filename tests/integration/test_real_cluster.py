"""The tagged key layout on a real three-primary cluster.

Every script call and MULTI the library sends while it writes one of everything on a
standalone server is replayed, call by call, through redis-py's ``RedisCluster`` (which
routes each by its keys): all run in one slot, as the slot check (``FLUE_CHECK_SLOTS``, on
for the whole suite) promises, and a call the slot check refuses is refused by the cluster
too. Then the library itself on the cluster: a slot moved under writers leaves every
index exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, ResponseError

import flue_models as fm
from flue_models.client import FlueCommands, FlueRedisCluster, NodeCoalescer, Script, TimedSend
from flue_models.connection import Database
from flue_models.errors import InvalidURLError
from flue_models.keys import bucket_of
from flue_models.slots import slot_of
from flue_models.state.submission import Submission
from tests.conftest import RedisProcess, RedisServers
from tests.integration.models import SpreadItem, Ticket
from tests.integration.store_contents import fill
from tests.waiting import within


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
#: A slot move: (source, target, slot, the kind of call whose slot it is).
Move = Callable[[RedisProcess, RedisProcess, int, str], Awaitable[None]]


async def record_calls(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Write one of everything on the standalone server, recording each script call
    ("script", keys, args) and each atomic batch ("MULTI", commands, ())."""
    calls: list[Call] = []
    call, run_batch = FlueCommands.run_script, Database.run_batch

    async def recorded_call(
        self: FlueCommands, script: Script, keys: Any, args: Any, **kw: Any
    ) -> Any:
        calls.append((script.name, list(keys), list(args)))
        return await call(self, script, keys, args, **kw)

    async def recorded_batch(self: Database, commands: Any, **kw: Any) -> Any:
        if kw.get("atomic"):
            calls.append(("MULTI", [tuple(c) for c in commands], ()))
        return await run_batch(self, commands, **kw)

    monkeypatch.setattr(FlueCommands, "run_script", recorded_call)
    monkeypatch.setattr(Database, "run_batch", recorded_batch)
    await fill(db)
    monkeypatch.undo()
    return calls


async def test_every_call_of_a_workload_runs_in_one_slot_of_a_real_cluster(
    db: Database, cluster_client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await record_calls(db, monkeypatch)
    assert {name for name, _k, _a in calls} >= {"save", "stream_append", "MULTI"}
    scripts = {script.sha: script for script in db.scripts.loaded.values()}
    in_multi = {
        scripts[command[1]].name
        for name, commands, _a in calls
        if name == "MULTI"
        for command in commands
        if command[0] == "EVALSHA"
    }
    assert in_multi >= {"save", "stream_create", "stream_close"}  # a run's start and end
    for script in scripts.values():
        await cluster_client.script_load(script.text)  # on every primary
    for name, keys, args in calls:
        if one_server_admission(db, name, keys, args):
            continue  # on a cluster, an admission reads those keys first (test_submissions)
        if name == "MULTI":
            async with cluster_client.pipeline(transaction=True) as pipe:
                for command in keys:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
            assert not [r for r in replies if isinstance(r, ResponseError)], (keys, replies)
        else:
            text = db.scripts.get(name).text
            reply = await cluster_client.execute_command("EVAL", text, len(keys), *keys, *args)
            assert not isinstance(reply, ResponseError), (name, reply)
    copied = [k async for k in cluster_client.scan_iter(match=db.keys.pattern())]
    assert copied  # the replay wrote the workload's keys across the cluster's nodes


def one_server_admission(db: Database, name: str, keys: Sequence[Any], args: Sequence[Any]) -> bool:
    """Whether a call is the one that crosses slots on purpose: an admission on one
    server, a ``save`` guarded by its id's key in every other bucket and its receipt.
    Any other call whose keys span slots fails the test here."""
    if name == "MULTI" or len({slot_of(key) for key in keys}) == 1:
        return False
    assert name == "save", (name, keys)
    submission_id = args[2]  # ARGV: the head, the version, the id
    spec = Submission.__flue_spec__
    allowed = {*spec.candidate_keys(db.keys, submission_id), db.keys.receipt(submission_id)[0]}
    row_slot = slot_of(keys[1])  # KEYS: the version counter, the row, ...
    assert {k for k in keys if slot_of(k) != row_slot} <= allowed, keys
    return True


async def test_a_call_the_slot_check_refuses_is_refused_by_the_cluster(
    db: Database, cluster_client: RedisCluster
) -> None:
    a, b = db.keys.record("it_ticket", "x"), db.keys.stream("s").meta
    with pytest.raises(fm.ConfigurationError):
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


async def move_slot(
    source: RedisProcess,
    target: RedisProcess,
    slot: int,
    *,
    batch: int = 20,
    between: Callable[[list[bytes]], Awaitable[None]] | None = None,
) -> int:
    """Reshard one slot from ``source`` to ``target`` the way redis-cli does (IMPORTING,
    MIGRATING, MIGRATE ``batch`` keys at a time, SETSLOT NODE); return how many keys
    moved. ``between`` is awaited with the keys of each MIGRATE after it, while the slot
    is half-moved."""
    src = aioredis.Redis(host="127.0.0.1", port=source.port)
    dst = aioredis.Redis(host="127.0.0.1", port=target.port)
    try:
        src_id = (await src.execute_command("CLUSTER", "MYID")).decode()
        dst_id = (await dst.execute_command("CLUSTER", "MYID")).decode()
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while keys := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            await src.execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
            moved += len(keys)
            if between is not None:
                await between(keys)
            await asyncio.sleep(0)  # let the writers in between batches
        # The new owner first, then the old one, then every other primary, as
        # `redis-cli --cluster reshard` does: no node is left to learn it by gossip alone,
        # so a slot-map refresh the client takes from any of them is already the new one.
        for client in (dst, src):
            await client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for line in (await src.execute_command("CLUSTER", "NODES")).decode().splitlines():
            node_id, address, flags = line.split()[:3]
            if "master" in flags and node_id not in (src_id, dst_id):
                host, port = address.split("@")[0].rsplit(":", 1)
                other = aioredis.Redis(host=host, port=int(port))
                try:
                    await other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
                finally:
                    await other.aclose()
        return moved
    finally:
        await src.aclose()
        await dst.aclose()


def source_and_target(
    cluster: list[RedisProcess], db: Database, slot: int
) -> tuple[RedisProcess, RedisProcess]:
    """The node that serves ``slot`` in the client's slot map, and another primary."""
    owner = db.client.nodes_manager.get_node_from_slot(slot)  # type: ignore[union-attr]
    source = next(n for n in cluster if n.port == owner.port)
    return source, next(n for n in cluster if n.port != owner.port)


async def test_a_slot_moved_under_writers_leaves_every_index_exact(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """Writers save and update records while their collection's slot moves to another
    primary: calls that meet the half-moved slot (TRYAGAIN, ASK, MOVED) are retried, every
    acknowledged write is there afterwards, and verify finds no index/row mismatch."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        record_key = db.keys.record("it_ticket", "x")
        slot = slot_of(record_key)
        source, target = source_and_target(cluster, db, slot)
        await Ticket.save_many([Ticket(id=f"t-{i}", status="open", priority=i) for i in range(300)])
        saved: list[str] = []
        stop = asyncio.Event()

        async def mark_done(ticket_id: str) -> None:
            """As docs/durability.md says to: a ConflictError after a lost reply means
            read the record again and compare."""
            while True:
                row = await Ticket.get(ticket_id)
                assert row is not None
                if row.status == "done":
                    return
                try:
                    await row.update(status="done")
                except fm.ConflictError:
                    continue
                return

        async def writer(w: int) -> None:
            n = 0
            while not stop.is_set():
                ticket_id = f"w{w}-{n}"
                await Ticket.create(id=ticket_id, status="new", priority=n)  # safe to retry
                await mark_done(ticket_id)
                old = await Ticket.get(f"t-{(w * 37 + n) % 300}")
                assert old is not None
                with contextlib.suppress(fm.ConflictError):  # another writer's, or ours landed
                    await old.update(priority=old.priority + 1000)
                saved.append(ticket_id)
                n += 1

        writers = [asyncio.create_task(writer(w)) for w in range(6)]
        try:
            moved = await within(move_slot(source, target, slot), "the slot to move")
            during = len(saved)  # writes acknowledged while the slot was on its way
            stop.set()
            await within(asyncio.gather(*writers), "the writers to stop")
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
        assert moved >= 300  # the rows, and the collection's index sets with them
        assert db.client.get_node_from_key(record_key).port == target.port  # type: ignore[union-attr]
        assert during > 0  # the writers wrote while the slot moved
        assert await Ticket.find(Ticket.status == "done").count() == len(saved)
        assert await Ticket.find(Ticket.status == "new").count() == 0
        report = await fm.verify_collection(Ticket)
        assert report.ok, report


async def test_a_bucketed_collection_spreads_over_the_primaries_and_lists_as_one(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """A collection of eight buckets is in eight slots on more than one primary; its
    listings gather every bucket into one order, equal to the ids sorted by (seq, id)."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        items = [
            SpreadItem(id=f"s-{n}", color=("red", "blue")[n % 2], flag=True, size=n, seq=n % 50)
            for n in range(400)
        ]
        await SpreadItem.save_many(items)
        nodes = {
            db.client.get_node_from_key(db.keys.in_bucket(b).all("it_spread_item")).port  # type: ignore[union-attr]
            for b in range(8)
        }
        assert len(nodes) >= 2
        for b in range(8):  # each bucket's records on its bucket's node
            home = db.keys.in_bucket(b)
            assert await db.client.zcard(home.all("it_spread_item")) == sum(
                1 for i in items if bucket_of(i.id, 8) == b
            )
        # A descending walk orders ties by id descending too (ZREVRANGE).
        blue = sorted((i for i in items if i.color == "blue"), key=lambda i: (i.seq, i.id))
        blue.reverse()
        query = SpreadItem.find(SpreadItem.color == "blue").sort_by("-seq")
        paged: list[str] = []
        cursor = None
        while True:
            page = await query.page(limit=37, cursor=cursor)
            paged += [i.id for i in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert paged == [i.id for i in blue]
        assert await query.count() == 200
        report = await fm.verify_collection(SpreadItem)
        assert report.ok, report.drift
        assert report.records == 400


async def test_every_node_sends_as_a_standalone_client_does(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """The nodes' connections are the library's (hiredis packs the arguments as they are;
    a write has its deadline without a task of its own), not redis-py's plain ones,
    whichever node a call reaches."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        await SpreadItem.save_many(
            [SpreadItem(id=f"s-{n}", color="red", flag=True, size=n, seq=n) for n in range(40)]
        )
        assert await SpreadItem.find(SpreadItem.color == "red").count() == 40
        nodes = db.client.get_nodes()  # type: ignore[union-attr]
        connections = [c for node in nodes for c in node._connections]
        assert len({c.port for c in connections}) >= 2  # more than one node was used
        assert all(isinstance(c, TimedSend) for c in connections)


@pytest.mark.parametrize("call", ["get", "batch", "multi"])
async def test_a_node_that_stops_answering_ends_each_call_at_the_timeout(
    redis_servers: RedisServers, key_prefix: str, call: str
) -> None:
    """Replies from a node are read under the connection's timeout, as on one server:
    a primary that stops answering (SIGSTOP) turns a read, a batch over every primary
    and a ``MULTI`` into ``ConnectionLostError`` at the timeout, not a wait for ever;
    once it answers again, so does the client. (Its own cluster: the stop must not
    touch the module's.)"""
    nodes = redis_servers.start_cluster()
    quick = fm.RetryPolicy(retries=0)
    async with fm.connect(nodes[0].url, key_prefix=key_prefix, timeout=0.5, retry=quick) as db:
        items = [SpreadItem(id=f"s-{n}", color="red", flag=True, size=n, seq=n) for n in range(16)]
        await SpreadItem.save_many(items)
        key = SpreadItem.__flue_spec__.record_key(db.keys, "s-0")
        stopped = next(n for n in nodes if n.port == db.client.get_node_from_key(key).port)  # type: ignore[union-attr]
        calls = {
            "get": lambda: SpreadItem.get("s-0"),
            "batch": lambda: SpreadItem.get_many([item.id for item in items]),
            "multi": lambda: db.run_batch([("HGETALL", key), ("HLEN", key)], atomic=True),
        }
        assert stopped.process is not None
        stopped.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(fm.ConnectionLostError, match="Timeout reading"):
                await within(calls[call](), "the call to end at its timeout", seconds=10)
        finally:
            stopped.process.send_signal(signal.SIGCONT)
        found = await within(SpreadItem.get("s-0"), "a read once the node answers again")
        assert found == items[0]


async def test_a_batch_goes_to_each_primary_itself_and_follows_a_moved_slot(
    cluster: list[RedisProcess], key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_batch groups a batch by slot itself (redis-py's cluster pipeline is not used);
    a command's error stays in its place; a batch it cannot route (a keyless command)
    goes through redis-py's pipeline; a command that meets a slot moved behind the
    client's back follows the redirect here: the replies are right either way."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        keys = [db.keys.in_bucket(b).record("it_spread_item", f"x{b}") for b in range(8)]
        assert len({db.client.get_node_from_key(k).name for k in keys}) > 1  # type: ignore[union-attr]
        await db.run_batch([("HSET", key, "f", str(n)) for n, key in enumerate(keys)])
        wanted = [str(n).encode() for n in range(8)]
        pipelines: list[bool] = []
        pipeline = type(db.client).pipeline

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            pipelines.append(True)
            return pipeline(self, *args, **kwargs)

        monkeypatch.setattr(type(db.client), "pipeline", counted)
        assert await db.run_batch([("HGET", key, "f") for key in keys]) == wanted
        assert pipelines == []  # grouped per node here
        await db.client.set(db.keys.in_bucket(0).all("it_spread_item"), "not a set")
        replies = await db.run_batch(
            [("ZCARD", db.keys.in_bucket(0).all("it_spread_item")), ("HGET", keys[1], "f")],
            return_errors=True,
        )
        assert isinstance(replies[0], ResponseError)
        assert replies[1] == b"1"
        assert pipelines == []
        timed = await db.run_batch([("TIME",), ("HGET", keys[2], "f")])
        assert timed[1] == b"2"
        assert pipelines == [True]  # no key to route TIME by: redis-py's pipeline

        key = keys[3]
        source, target = source_and_target(cluster, db, slot_of(key))
        await within(move_slot(source, target, slot_of(key)), "the slot to move")
        assert await db.run_batch([("HGET", k, "f") for k in keys]) == wanted
        assert len(pipelines) == 1  # MOVED: the moved command followed here, to its owner
        assert db.client.get_node_from_key(key).port == target.port  # type: ignore[union-attr]
        assert await db.run_batch([("HGET", k, "f") for k in keys]) == wanted
        assert len(pipelines) == 1


def node_coalescer(db: Database) -> NodeCoalescer:
    found = db.client.flue_coalescer
    assert isinstance(found, NodeCoalescer)
    return found


async def test_concurrent_calls_share_a_pipeline_per_primary_and_get_their_own_replies(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """Automatic pipelining on a cluster: the single commands concurrent callers send
    while one is in flight go out as one pipeline per primary; each caller gets its own
    reply or error; a sequential caller is not queued."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        items = [SpreadItem(id=f"s-{n}", color="red", flag=True, size=n, seq=n) for n in range(64)]
        await SpreadItem.save_many(items)
        keys = [SpreadItem.__flue_spec__.record_key(db.keys, item.id) for item in items]
        assert len({db.client.get_node_from_key(k).name for k in keys}) == 3  # type: ignore[union-attr]
        coalescer = node_coalescer(db)
        before = (coalescer.batches, coalescer.batched)
        found = await asyncio.gather(*(SpreadItem.get(item.id) for item in items))
        assert found == items
        batches, batched = coalescer.batches - before[0], coalescer.batched - before[1]
        assert batched >= 48  # most went out in shared pipelines...
        assert batches < batched / 4  # ...several callers' commands in each
        assert coalescer.in_flight == 0
        assert not coalescer.queued
        plain = db.keys.in_bucket(0).all("it_spread_item")
        calls: list[Any] = [SpreadItem.get(item.id) for item in items[:20]]
        calls.insert(10, db.client.hgetall(plain))  # a sorted set: WRONGTYPE, its caller's
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[10], fm.errors.CommandError)
        assert "WRONGTYPE" in str(results[10])
        assert [r for i, r in enumerate(results) if i != 10] == items[:20]
        before = (coalescer.batches, coalescer.batched)
        for item in items[:10]:
            assert await SpreadItem.get(item.id) == item
        assert (coalescer.batches, coalescer.batched) == before


async def test_a_queued_command_whose_slot_moved_is_sent_again_by_its_caller(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """A command in a primary's shared pipeline that meets a slot moved behind the
    client's back (MOVED: it did not run) is sent again by its caller alone, to the
    slot's owner; the other callers' replies are unchanged."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        items = [SpreadItem(id=f"m-{n}", color="red", flag=True, size=n, seq=n) for n in range(32)]
        await SpreadItem.save_many(items)
        key = SpreadItem.__flue_spec__.record_key(db.keys, items[5].id)  # queued, not first
        source, target = source_and_target(cluster, db, slot_of(key))
        await within(move_slot(source, target, slot_of(key)), "the slot to move")
        found = await asyncio.gather(*(SpreadItem.get(item.id) for item in items))
        assert found == items
        assert db.client.get_node_from_key(key).port == target.port  # type: ignore[union-attr]
        assert node_coalescer(db).in_flight == 0


async def test_a_stopped_primary_fails_only_the_callers_it_was_to_answer(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    """Each primary's pipeline has its own fate: with one primary stopped, the callers
    whose commands went to it hear ``ConnectionLostError`` at the timeout, and every
    other caller gets its reply."""
    nodes = redis_servers.start_cluster()
    quick = fm.RetryPolicy(retries=0)
    async with fm.connect(nodes[0].url, key_prefix=key_prefix, timeout=0.5, retry=quick) as db:
        items = [SpreadItem(id=f"s-{n}", color="red", flag=True, size=n, seq=n) for n in range(48)]
        await SpreadItem.save_many(items)
        port_of = {
            item.id: db.client.get_node_from_key(  # type: ignore[union-attr]
                SpreadItem.__flue_spec__.record_key(db.keys, item.id)
            ).port
            for item in items
        }
        stopped = next(n for n in nodes if n.port == port_of[items[1].id])
        assert stopped.process is not None
        stopped.process.send_signal(signal.SIGSTOP)
        try:
            results = await within(
                asyncio.gather(*(SpreadItem.get(i.id) for i in items), return_exceptions=True),
                "every caller to hear",
                seconds=10,
            )
        finally:
            stopped.process.send_signal(signal.SIGCONT)
        for item, result in zip(items, results, strict=True):
            if port_of[item.id] == stopped.port:
                assert isinstance(result, fm.ConnectionLostError), (item.id, result)
            else:
                assert result == item, (item.id, result)
        assert sum(port_of[i.id] == stopped.port for i in items) not in (0, len(items))


class SlotTenants:
    """A run, a session and a stream, each in a slot of its own, with what each should
    read back. Each kind loops in a task of its own (:meth:`loop`): reads (many copies at
    once) then one write, each answer asserted, the way callers meet a slot mid-move."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.runs: list[fm.WorkflowRun] = []
        self.open_runs: list[fm.WorkflowRun] = []
        self.events = 0
        self.session_id = fm.session_key("support", "eu", "claude", "moved")
        self.entries = 0
        self.stream: fm.EventStream[dict[str, Any]] = fm.EventStream("agents/moved")
        self.appended = 0
        self.started = 0
        self.calls: dict[str, int] = {"run": 0, "session": 0, "stream": 0}
        self.progress = asyncio.Event()
        self.stop = False
        #: MULTIs over a moved key and one still to move, sent while the slot is split.
        self.probes: list[asyncio.Task[list[Any]]] = []

    async def fill(self) -> None:
        first = await fm.WorkflowRun.start("wf", input={"n": 0})
        slot = self.run_slot(first)
        self.runs.append(first)
        n = 0
        while len(self.runs) < 4:  # the first run's bucket-mates share its slot
            n += 1
            assert n < 1000, "no run of a thousand shares the first one's bucket"
            run = await fm.WorkflowRun.start("wf", input={"n": n})
            if self.run_slot(run) == slot:
                self.runs.append(run)
        self.started = n + 1
        for n in range(5):
            await self.runs[0].events.append({"n": n})
        self.events = 5
        self.open_runs = list(self.runs[1:])
        session = await fm.Session.open(self.session_id)
        for n in range(3):
            await session.append(fm.MessageEntry(role="user", content=f"m{n}"))
        self.entries = 3
        await self.stream.create()
        for n in range(3):
            await self.stream.append({"n": n})
        self.appended = 3

    def run_slot(self, run: fm.WorkflowRun) -> int:
        return slot_of(self.db.keys.stream(f"runs/{run.id}").events)

    def slots(self) -> dict[str, int]:
        return {
            "run": self.run_slot(self.runs[0]),
            "session": slot_of(self.db.keys.session(self.session_id).row),
            "stream": slot_of(self.db.keys.stream(self.stream.path).meta),
        }

    def done(self, kind: str) -> None:
        self.calls[kind] += 1
        self.progress.set()

    async def run_calls(self) -> None:
        found = await asyncio.gather(*(fm.WorkflowRun.get(run.id) for run in self.runs))
        assert all(row is not None for row in found), "a run that exists read as missing"
        listed, cursor = 0, None  # every bucket, the moving one included, "skip" on
        while True:  # (a transient error taken for corrupt data would be skipped)
            page = await fm.WorkflowRun.list(limit=50, cursor=cursor, on_error="skip")
            assert page.skipped == []
            listed += len(page.items)
            if (cursor := page.next_cursor) is None:
                break
        assert listed == self.started, "a listing missed runs"
        read = await self.runs[0].events.read()
        assert [e.data for e in read.events] == [{"n": n} for n in range(self.events)]
        if self.open_runs:  # a MULTI of two scripts: the row and its stream's close
            ended = await self.open_runs.pop().finish(result={"ok": True})
            assert ended == fm.EndResult.ENDED

    async def session_calls(self) -> None:
        loads = await asyncio.gather(*(fm.Session.load(self.session_id) for _ in range(4)))
        for session in loads:
            assert session is not None
            assert len(session.entries) == self.entries
        assert session is not None
        await session.append(fm.MessageEntry(role="user", content="more"))
        self.entries += 1

    async def stream_calls(self) -> None:
        reads = await asyncio.gather(*(self.stream.read(limit=1000) for _ in range(4)))
        assert all(len(r.events) == self.appended for r in reads)
        await self.stream.append({"n": self.appended})
        self.appended += 1

    async def loop(self, kind: str) -> None:
        calls = {"run": self.run_calls, "session": self.session_calls}.get(kind, self.stream_calls)
        while not self.stop:
            await calls()
            self.done(kind)

    async def calls_of(self, kind: str, count: int) -> None:
        """Return once ``kind`` made ``count`` calls in all."""
        while self.calls[kind] < count:
            self.progress.clear()
            await self.progress.wait()

    async def move_each(self, cluster: list[RedisProcess], move: Move) -> None:
        """Loop every kind of call while ``move`` moves each tenant's slot to another
        primary, in turn; after each move, the call that starts once it is done follows
        the slot (the one in flight may have ended through ASK, or on the source before an
        atomic handover); then stop the calls and verify the collections."""
        loops = [asyncio.create_task(self.loop(kind)) for kind in self.calls]
        try:
            for kind, slot in self.slots().items():
                source, target = source_and_target(cluster, self.db, slot)
                await within(move(source, target, slot, kind), f"the {kind}'s slot to move")
                during = self.calls[kind]
                await within(self.calls_of(kind, during + 2), f"a {kind} call after the move")
                owner = self.db.client.nodes_manager.get_node_from_slot(slot)  # type: ignore[union-attr]
                assert owner.port == target.port
        finally:
            self.stop = True
            await within(asyncio.gather(*loops), "the calls to stop")
        for model in (fm.WorkflowRun, fm.Session):
            report = await fm.verify_collection(model)
            assert report.ok, report

    def hold(
        self, moving: str, source: RedisProcess, slot: int
    ) -> Callable[[list[bytes]], Awaitable[None]]:
        """What the move of ``moving``'s slot does after each key: wait for calls
        (:meth:`after_each_key`), then meet each redirect for certain: a read of the key
        that just left is answered ``ASK`` (and sent behind ``ASKING``); a ``MULTI`` of
        it and a key still on ``source`` is refused with ``TRYAGAIN`` until the move
        ends (left running: see :attr:`probes`)."""

        async def after(keys: list[bytes]) -> None:
            await self.after_each_key(moving)
            assert await self.db.client.execute_command("EXISTS", keys[0]) == 1
            raw = source.sync_client()
            try:
                left = raw.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
            finally:
                raw.close()
            if left and len(self.probes) < 3:
                batch = [("EXISTS", keys[0]), ("EXISTS", left[0])]
                self.probes.append(asyncio.create_task(self.db.run_batch(batch, atomic=True)))

        return after

    async def after_each_key(self, moving: str) -> None:
        """Hold the move until the kind in the moving slot made a call, or the others
        made three (a call refused with TRYAGAIN waits for keys still to move: it would
        never end if the move waited for it alone)."""
        own, others = self.calls[moving], sum(self.calls.values()) - self.calls[moving]
        while self.calls[moving] == own and sum(self.calls.values()) - own < others + 3:
            self.progress.clear()
            await self.progress.wait()


async def test_every_call_follows_slots_moved_key_by_key_under_it(
    cluster: list[RedisProcess], key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three slots (a run's bucket, a session's, a stream's) move by MIGRATE one key at a
    time, while every kind of call (run reads, a run's finish, session loads and appends,
    stream reads and appends, many at once) runs in a loop; after each key the move waits
    for a call of the moving kind (or three of the others). No MOVED, ASK or TRYAGAIN
    reaches a caller, and no existing row reads as missing; the calls met every kind of
    redirect and refusal on the way."""
    seen: list[str] = []
    sort = FlueRedisCluster._flue_sort

    async def spied(
        self: FlueRedisCluster, node: Any, pending: Any, found: Any, replies: Any
    ) -> Any:
        seen.extend(type(reply).__name__ for reply in found if isinstance(reply, ResponseError))
        return await sort(self, node, pending, found, replies)

    monkeypatch.setattr(FlueRedisCluster, "_flue_sort", spied)
    # A call refused with TRYAGAIN waits for the keys of its slot still to move, here
    # one per few calls: a longer budget than the default's 3 s.
    retry = fm.RetryPolicy(retries=60, cap=0.5)
    async with fm.connect(cluster[0].url, key_prefix=key_prefix, retry=retry) as db:
        tenants = SlotTenants(db)
        await tenants.fill()
        assert len(tenants.runs) >= 2

        async def migrate(source: RedisProcess, target: RedisProcess, slot: int, kind: str) -> None:
            between = tenants.hold(kind, source, slot)
            assert await move_slot(source, target, slot, batch=1, between=between) >= 2

        await tenants.move_each(cluster, migrate)
        probed = await within(asyncio.gather(*tenants.probes), "the split MULTIs")
        assert probed
        assert all(replies == [1, 1] for replies in probed)  # once the move ended
    assert {"AskError", "MovedError", "TryAgainError"} <= set(seen), set(seen)


async def migrate_atomically(
    source: RedisProcess, target: RedisProcess, slot: int, tenants: SlotTenants, kind: str
) -> None:
    """Move ``slot`` with Valkey 9's atomic slot migration (``CLUSTER MIGRATESLOTS``): the
    target takes a snapshot and the writes after it, then owns the slot in one step.
    Returns once the source reports the export done; meanwhile the calls go on."""
    src = aioredis.Redis(host="127.0.0.1", port=source.port)
    dst = aioredis.Redis(host="127.0.0.1", port=target.port)
    try:
        dst_id = (await dst.execute_command("CLUSTER", "MYID")).decode()
        try:
            await src.execute_command(
                "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", slot, slot, "NODE", dst_id
            )
        except ResponseError as exc:
            pytest.skip(f"this server has no atomic slot migration ({exc})")
        while True:
            jobs = await src.execute_command("CLUSTER", "GETSLOTMIGRATIONS")
            states = {
                job[b"state"] for job in jobs if job[b"slot_ranges"] == f"{slot}-{slot}".encode()
            }
            if states and states <= {b"success"}:
                return
            assert not states & {b"failed", b"cancelled"}, jobs
            await tenants.after_each_key(kind)  # progress-triggered: a call between polls
    finally:
        await src.aclose()
        await dst.aclose()


async def test_every_call_follows_slots_moved_atomically_under_it(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """The same calls while Valkey 9 moves each slot atomically (CLUSTER MIGRATESLOTS):
    no redirect reaches a caller, nothing reads as missing, and the calls after the
    handover follow the slot to its new owner."""
    async with fm.connect(cluster[0].url, key_prefix=key_prefix) as db:
        tenants = SlotTenants(db)
        await tenants.fill()

        async def migrate(source: RedisProcess, target: RedisProcess, slot: int, kind: str) -> None:
            await migrate_atomically(source, target, slot, tenants, kind)

        await tenants.move_each(cluster, migrate)


async def test_connect_starts_from_any_seed_that_answers(
    cluster: list[RedisProcess], key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead first seed does not stop start-up: the next one answers, and the client
    learns every node from it; $REDIS_URL may hold the seeds with commas."""
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    async with fm.connect([dead, cluster[1].url], key_prefix=key_prefix) as db:
        assert isinstance(db.client, FlueRedisCluster)
        known = set(db.client.nodes_manager.startup_nodes)  # learned from the seed
        assert known == {f"127.0.0.1:{node.port}" for node in cluster}
        await Ticket(id="t-1", status="open", priority=1).save()
        assert await Ticket.get("t-1") is not None
    monkeypatch.setenv("REDIS_URL", f"{dead}, {cluster[2].url}")
    async with fm.connect(key_prefix=key_prefix) as db:
        assert await Ticket.get("t-1") is not None
    with pytest.raises(fm.ConnectionFailedError, match="no seed answered") as lost:
        await fm.connect([dead, "redis://127.0.0.1:2/0"], key_prefix=key_prefix)
    assert "127.0.0.1:1" in str(lost.value)
    assert "127.0.0.1:2" in str(lost.value)
    with pytest.raises(InvalidURLError):  # every seed is checked before any is tried
        await fm.connect([cluster[0].url, "http://x"], key_prefix=key_prefix)


async def test_several_urls_naming_a_standalone_server_are_refused(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    server = redis_servers.start()
    with pytest.raises(fm.ConfigurationError, match="standalone server"):
        await fm.connect([server.url, server.url], key_prefix=key_prefix)


async def test_a_cluster_client_of_the_application_is_used_and_left_open(
    cluster: list[RedisProcess], key_prefix: str
) -> None:
    """connect(client=RedisCluster(...)): the library routes on the application's nodes
    and slot map, and closing the database leaves the client working."""
    mine = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    try:
        async with fm.connect(client=mine, key_prefix=key_prefix) as db:
            assert isinstance(db.client, FlueRedisCluster)
            assert db.client.nodes_manager is mine.nodes_manager  # shared, not copied
            await SpreadItem.save_many(
                [SpreadItem(id=f"s-{n}", color="red", flag=True, size=n, seq=n) for n in range(40)]
            )
            page = await SpreadItem.find(SpreadItem.color == "red").page(limit=50)
            assert len(page.items) == 40
        assert await mine.ping()
        assert await mine.exists(db.keys.in_bucket(0).all("it_spread_item")) in (0, 1)
    finally:
        await mine.aclose()
