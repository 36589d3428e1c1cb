"""Nested prefixes never meet (``app`` and ``app:prod`` on one server): start-up, queries,
verify and migrations; and migration 0002 moves a store of the old layout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import flue_models as fm
from flue_models import EventStream, Submission, WorkflowRun
from flue_models.errors import MigrationFailedError
from flue_models.keys import SEPARATOR, KeySpace
from flue_models.schema import migrate
from flue_models.state.integrity import verify_state
from tests.integration.models import Ticket

MODELS = (Ticket, WorkflowRun, Submission, fm.Session)


async def fill(db: fm.Database, tag: str) -> None:
    for i in range(3):
        await Ticket(id=f"{tag}-{i}", status="open", priority=i, email=f"{tag}{i}@x").save()
    run = await WorkflowRun.start("wf", run_id=f"{tag}-run")
    await run.events.append({"tag": tag})
    await run.finish()
    await Submission.admit_dispatch(f"{tag}-d", session_id="s", input={})


async def to_legacy_layout(db: fm.Database) -> None:
    """Rewrite a store as the layout before 0002 had it: ``<prefix>:<rest>``, version 1."""
    keys = db.keys
    found = [raw.decode() async for raw in db.client.scan_iter(match=keys.pattern())]
    for key in found:  # collected first: renaming while SCAN walks may hide keys from it
        await db.client.rename(key, f"{keys.prefix}:{key[len(keys.head) :]}")
    legacy = keys.legacy_meta
    await db.client.hset(legacy, "schema_version", "1")
    await db.client.hdel(legacy, "applied:flue:0002", "applied:flue:0003")


async def all_keys(db: fm.Database, prefix: str) -> list[bytes]:
    return sorted([k async for k in db.client.scan_iter(match=f"{prefix}*")])


@pytest.fixture
async def server(redis_url: str, key_prefix: str) -> AsyncIterator[str]:
    yield key_prefix
    admin = await fm.connect(redis_url, key_prefix="admin", migrate=False, check_schema=False)
    keys = [k async for k in admin.client.scan_iter(match=f"{key_prefix}*")]
    if keys:
        await admin.client.delete(*keys)
    await admin.close()


async def test_nested_prefixes_start_query_verify_and_migrate_apart(
    redis_url: str, server: str
) -> None:
    outer, inner = server, f"{server}:prod"
    async with fm.connect(redis_url, key_prefix=inner) as db:
        await fill(db, "inner")
    async with fm.connect(redis_url, key_prefix=outer) as db:  # was UnversionedDataError
        await fill(db, "outer")
        assert sorted(t.id for t in await Ticket.find().all()) == [f"outer-{i}" for i in range(3)]
        assert [r.id for r in (await WorkflowRun.list()).items] == ["outer-run"]
        assert (await verify_state(MODELS)).ok  # the inner store is no finding of ours
        assert [k for k in await all_keys(db, outer) if k.startswith(KeySpace(outer).head.encode())]
    async with fm.connect(redis_url, key_prefix=inner) as db:
        assert sorted(t.id for t in await Ticket.find().all()) == [f"inner-{i}" for i in range(3)]
        assert (await verify_state(MODELS)).ok
        assert await migrate(db) == []


@pytest.mark.standalone  # the old layout's keys have no tags: its move crosses slots
async def test_0002_moves_an_old_layout_store_and_leaves_nested_ones_alone(
    redis_url: str, server: str
) -> None:
    outer, new_inner, old_inner = server, f"{server}:prod", f"{server}:old"
    async with fm.connect(redis_url, key_prefix=new_inner) as db:
        await fill(db, "new")
    async with fm.connect(redis_url, key_prefix=old_inner) as db:
        await fill(db, "old")
        await to_legacy_layout(db)
    async with fm.connect(redis_url, key_prefix=outer) as db:
        await fill(db, "outer")
        await to_legacy_layout(db)
        inner_keys = [k for k in await all_keys(db, f"{outer}:") if b":prod" in k or b":old" in k]
    async with fm.connect(redis_url, key_prefix=outer) as db:  # migrates 0002 and 0003
        assert await db.client.exists(db.keys.meta)
        assert not await db.client.exists(db.keys.legacy_meta)
        assert sorted(t.id for t in await Ticket.find().all()) == [f"outer-{i}" for i in range(3)]
        events = (await EventStream("runs/outer-run").read()).events
        assert [e.data for e in events] == [{"tag": "outer"}]
        replay = await Submission.admit_dispatch("outer-d", session_id="s", input={})
        assert replay.created is False
        assert (await verify_state(MODELS)).ok
        left = [k for k in await all_keys(db, f"{outer}:") if b":prod" in k or b":old" in k]
        assert left == inner_keys  # the nested stores were not touched
        stray = [
            k
            for k in await all_keys(db, f"{outer}:")
            if SEPARATOR.encode() not in k and not k.startswith(f"{old_inner}:".encode())
        ]
        assert stray == []  # every key of ours moved
    async with fm.connect(redis_url, key_prefix=old_inner) as db:  # its own move, later
        assert sorted(t.id for t in await Ticket.find().all()) == [f"old-{i}" for i in range(3)]


async def test_a_key_in_both_layouts_stops_the_move_before_any_write(
    redis_url: str, server: str
) -> None:
    async with fm.connect(redis_url, key_prefix=server) as db:
        await fill(db, "x")
        await to_legacy_layout(db)
        await db.client.set(db.keys.absolute("clash"), "new")
        await db.client.set(f"{server}:clash", "old")
        before = await all_keys(db, server)
    with pytest.raises(MigrationFailedError) as failed:
        await fm.connect(redis_url, key_prefix=server)
    assert "clash" in str(failed.value.__cause__)
    async with fm.connect(redis_url, key_prefix=server, migrate=False, check_schema=False) as db:
        assert await all_keys(db, server) == before
