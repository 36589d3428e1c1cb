"""Migration 0005_hash_tags: a store of the layout before it moves into the tagged one,
counted key by key, and every part of the library reads it afterwards."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

import flue_models as fm
from flue_models import EventStream, Session, Submission, WorkflowRun
from flue_models.errors import MigrationFailedError, SchemaError, SchemaLayoutError
from flue_models.keys import KeySpace
from flue_models.model.errors import UniqueViolationError
from flue_models.schema import migrate
from flue_models.slots import slot_of
from flue_models.state.integrity import verify_state
from tests.conftest import BUILTIN_MIGRATIONS
from tests.integration.models import Ticket
from tests.integration.test_minimal_acl import documented_acl

MODELS = (Ticket, WorkflowRun, Submission, Session)
#: A store of the older layout exists on a standalone server only: its keys have no tags,
#: so its writes and the move itself (RENAME into another slot) cross slots.
OLDER_LAYOUT = pytest.mark.standalone
HASH_TAGS = "flue/0005_hash_tags"
#: The built-in files after it, which run on the tagged layout.
AFTER_TAGS = BUILTIN_MIGRATIONS[5:]


async def fill(db: fm.Database) -> None:
    """One of everything the library stores."""
    for i in range(4):
        await Ticket(id=f"t-{i}", status="open", priority=i, email=f"{i}@x", owner="ann").save()
    await Ticket(id="t-4", status="closed", priority=9).save()
    run = await WorkflowRun.start("wf", run_id="r-1", input={"n": 1})
    await run.events.append({"n": 1})
    await run.events.append_once("k", {"n": 2})
    await run.events.append_chunk_segment(0, "partial")
    await run.finish(result={"ok": True})
    await WorkflowRun.start("wf", run_id="r-2")
    session = await Session.open(fm.session_key("support", "eu", "claude", "main"))
    await session.append(fm.MessageEntry(id="m1", role="user", content="hi"))
    await session.append(fm.MessageEntry(id="m2", parent_id="m1", role="assistant", content="yo"))
    await Submission.admit_dispatch("d-1", session_id="s-1", input={"q": 1})
    await Submission.admit_direct("p-1", session_id="s-2", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    await Submission.journal_begin(attempt)
    await Submission.journal_phase(attempt, "provider_started", stream_key="runs/r-1")
    await Submission.insert_attempt_marker("p-1", attempt.attempt_id)
    await Submission.admit_direct("p-2", session_id="s-3", input={})
    assert await Submission.settle_queued("p-2", "aborted")
    stream = EventStream("agents/a")
    await stream.create()
    await stream.append({"x": 1})


async def write_in_older_layout(
    db: fm.Database, write: Callable[[fm.Database], Awaitable[None]] = fill
) -> None:
    """Write through the library with the key names of the layout before 0005 (what the
    versions before it wrote), then keep the record where they kept it, at version 4."""
    tagged = db.keys
    db.keys, db.scripts.check_slots = tagged.untagged(), False
    try:
        await write(db)
    finally:
        db.keys, db.scripts.check_slots = tagged, True
    older = tagged.untagged()
    await db.client.rename(tagged.meta, older.meta)
    await db.client.hset(older.meta, "schema_version", "4")
    await db.client.hdel(older.meta, "applied:flue:0005")


async def all_keys(db: fm.Database) -> list[str]:
    return sorted([k.decode() async for k in db.client.scan_iter(match=db.keys.pattern())])


async def readable_everywhere(db: fm.Database) -> None:
    """Every kind of state reads as it was written."""
    assert await Ticket.find(Ticket.status == "open").count() == 4
    assert [t.id for t in await Ticket.find(Ticket.priority >= 2).sort_by("priority").all()] == [
        "t-2",
        "t-3",
        "t-4",
    ]
    with pytest.raises(UniqueViolationError):  # the unique claim of "0@x" moved with its row
        await Ticket(id="t-9", status="open", priority=1, email="0@x").save()
    runs = await WorkflowRun.list(status="completed")
    assert [r.id for r in runs.items] == ["r-1"]
    assert [e.data for e in (await EventStream("runs/r-1").read()).events] == [{"n": 1}, {"n": 2}]
    assert [c.body for c in await EventStream("runs/r-1").chunk_segments()] == ["partial"]
    replay = await EventStream("runs/r-1").meta()
    assert replay is not None
    assert replay.closed
    sid = fm.session_key("support", "eu", "claude", "main")
    loaded = await Session.load(sid)
    assert loaded is not None
    assert [m.id for m in loaded.entries] == ["m1", "m2"]
    assert [s.id for s in (await Session.find(Session.agent == "support").all())] == [sid]
    assert (
        await Submission.admit_dispatch("d-1", session_id="s-1", input={"q": 1})
    ).created is False
    assert [s.id for s in await Submission.list_running()] == ["p-1"]
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert journal.stream_key == "runs/r-1"
    assert (await EventStream("agents/a").read()).events[0].data == {"x": 1}
    report = await verify_state(MODELS)
    assert report.ok, report


@pytest.fixture
async def older_store(redis_url: str, key_prefix: str) -> AsyncIterator[list[str]]:
    """A store of the older layout under ``key_prefix``; yields its keys."""
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        await write_in_older_layout(db)
        keys = await all_keys(db)
    yield keys
    async with fm.connect(redis_url, key_prefix="admin", migrate=False, check_schema=False) as db:
        left = [k async for k in db.client.scan_iter(match=f"{key_prefix}::*")]
        if left:
            await db.client.delete(*left)


@OLDER_LAYOUT
async def test_0005_moves_every_key_into_its_tag_and_nothing_is_lost(
    redis_url: str, key_prefix: str, older_store: list[str]
) -> None:
    older = KeySpace(key_prefix, tagged=False)
    assert older.meta in older_store
    assert not any("{" in k for k in older_store)
    async with fm.connect(
        redis_url, key_prefix=key_prefix, migrate=False, check_schema=False
    ) as db:
        applied = await migrate(db, to=5)
        assert [s.file.label for s in applied] == [HASH_TAGS]
        moved = await all_keys(db)
        assert len(moved) == len(older_store)  # counted: one key for each key
        assert all(k.startswith(f"{db.keys.head}{{") for k in moved)
        assert not await db.client.exists(older.migration_lock, db.keys.migration_lock)
        for key in moved:  # a collection's keys share one slot; a stream's keys another
            if key.startswith(db.keys.head + "{stream:"):
                path = key.split("{stream:", 1)[1].split("}", 1)[0]
                assert slot_of(key) == slot_of(db.keys.absolute(f"{{stream:{path}}}"))
        ticket_slots = {slot_of(k) for k in moved if "{it_ticket:0}" in k}
        assert len(ticket_slots) == 1
        owned = json.loads(await db.client.hget(db.keys.record("it_ticket", "t-0"), "_owned"))
        assert all(key.startswith("{it_ticket:0}:") for part in owned.values() for key in part)
        assert [s.file.label for s in await migrate(db)] == AFTER_TAGS
        assert await migrate(db) == []
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        await readable_everywhere(db)


@OLDER_LAYOUT
async def test_0005_resumes_a_move_a_crash_stopped_halfway(
    redis_url: str, key_prefix: str, older_store: list[str]
) -> None:
    hash_tags = importlib.import_module("migrations.0005_hash_tags")
    flat, tagged = KeySpace(key_prefix, tagged=False), KeySpace(key_prefix)
    async with fm.connect(
        redis_url, key_prefix=key_prefix, migrate=False, check_schema=False
    ) as db:
        # What a crashed run leaves: some records' _owned rewritten, some keys renamed.
        half = [k for k in older_store if k != flat.meta][::2]
        for key in half:
            if hash_tags._is_record(flat, key):
                raw = await db.client.hget(key, "_owned")
                await db.client.hset(key, "_owned", hash_tags.new_owned(flat, tagged, raw))
            await db.client.rename(key, hash_tags.new_name(flat, tagged, key))
        assert [s.file.label for s in await migrate(db, to=5)] == [HASH_TAGS]
        assert len(await all_keys(db)) == len(older_store)
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        await readable_everywhere(db)


@OLDER_LAYOUT
async def test_0005_refuses_while_another_client_uses_the_prefix(
    redis_url: str, key_prefix: str, older_store: list[str]
) -> None:
    other = await fm.connect(redis_url, key_prefix=key_prefix, migrate=False, check_schema=False)
    older_version = aioredis.Redis.from_url(redis_url, client_name="flue-models:0123abcd")
    stranger = aioredis.Redis.from_url(redis_url, client_name="redis-cli")
    try:

        async def refused() -> None:
            with pytest.raises(MigrationFailedError) as failed:
                await fm.connect(redis_url, key_prefix=key_prefix)
            assert isinstance(failed.value.__cause__, fm.WritersActiveError)
            assert "stop every process" in str(failed.value.__cause__)

        await refused()  # another process of this version, on this prefix
        await other.close()
        await older_version.ping()
        await refused()  # a process of an older version, which names no prefix
        await older_version.aclose()
        await stranger.ping()  # a connection that is not flue-models' does not count
        async with fm.connect(
            redis_url, key_prefix=key_prefix, migrate=False, check_schema=False
        ) as db:
            assert await all_keys(db) == older_store  # refused before moving anything
            assert [s.file.label for s in await migrate(db)] == [HASH_TAGS, *AFTER_TAGS]
    finally:
        await other.close()
        await older_version.aclose()
        await stranger.aclose()


@OLDER_LAYOUT
async def test_0005_refuses_a_clash_or_a_foreign_key_before_any_write(
    redis_url: str, key_prefix: str, older_store: list[str]
) -> None:
    flat, tagged = KeySpace(key_prefix, tagged=False), KeySpace(key_prefix)
    async with fm.connect(
        redis_url, key_prefix=key_prefix, migrate=False, check_schema=False
    ) as db:
        await db.client.set(tagged.all("it_ticket"), "a copy in the new layout")
        before = await all_keys(db)
        with pytest.raises(MigrationFailedError) as failed:
            await migrate(db)
        assert "exists in both layouts" in str(failed.value.__cause__)
        assert await all_keys(db) == before
        await db.client.delete(tagged.all("it_ticket"))
        await db.client.set(f"{flat.head}Not-A-Collection", "x")
        with pytest.raises(MigrationFailedError) as failed:
            await migrate(db)
        assert "Not-A-Collection" in str(failed.value.__cause__)
        assert await all_keys(db) == sorted([*older_store, f"{flat.head}Not-A-Collection"])


@OLDER_LAYOUT
async def test_an_older_layout_is_refused_without_migrating_and_named(
    redis_url: str, key_prefix: str, older_store: list[str]
) -> None:
    with pytest.raises(SchemaLayoutError, match="flue-models migrate"):
        await fm.connect(redis_url, key_prefix=key_prefix, migrate=False)
    async with fm.connect(
        redis_url, key_prefix=key_prefix, migrate=False, check_schema=False
    ) as db:
        assert await all_keys(db) == older_store


async def test_a_fresh_store_starts_tagged_and_0005_has_nothing_to_move(
    redis_url: str, key_prefix: str
) -> None:
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        await fill(db)
        assert all(k.startswith(f"{db.keys.head}{{") for k in await all_keys(db))
        await readable_everywhere(db)


@OLDER_LAYOUT
async def test_0005_says_which_right_it_lacks_to_check_for_other_clients(
    redis_url: str, key_prefix: str, older_store: list[str]
) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    name = f"flue-acl-{key_prefix[-8:]}"
    await admin.execute_command("ACL", "SETUSER", name, *documented_acl(key_prefix, "pw"))
    host = redis_url.split("://", 1)[1].rsplit("@", 1)[-1]
    try:
        with pytest.raises(MigrationFailedError) as failed:
            await fm.connect(f"redis://{name}:pw@{host}", key_prefix=key_prefix)
        cause = failed.value.__cause__
        assert isinstance(cause, SchemaError)
        assert "(CLIENT LIST), which this user may not run" in str(cause)
        async with fm.connect(
            redis_url, key_prefix=key_prefix, migrate=False, check_schema=False
        ) as db:
            assert await all_keys(db) == older_store  # nothing was moved
    finally:
        await admin.execute_command("ACL", "DELUSER", name)
        await admin.aclose()
