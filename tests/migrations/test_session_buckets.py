"""Migration 0007_session_buckets: the sessions of a store at version 6 (every session in
bucket 0, forks guarded by the ``fork_of`` index) move into the bucket of their id,
counted, and each fork is marked on its parent; ``down`` gathers them back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import flue_models as fm
from flue_models import MessageEntry, Session
from flue_models.errors import MigrationFailedError
from flue_models.keys import bucket_of
from flue_models.model.buckets import bucket_field, stored_buckets
from flue_models.schema import migrate
from flue_models.state.integrity import verify_state
from flue_models.state.session import SESSION_BUCKETS
from tests.conftest import BUILTIN_MIGRATIONS
from tests.migrations.layouts import (
    declaring,
    refused_for_another_client,
    remove_prefix,
    unmigrated,
)

#: It and the built-in files after it.
FROM_0007 = BUILTIN_MIGRATIONS[6:]
#: The sessions move between slots: a standalone server only (a cluster refuses the move).
pytestmark = pytest.mark.standalone


async def sessions_in_one_bucket(db: fm.Database, count: int = 40) -> dict[str, str | None]:
    """Sessions (every fourth a fork of the one before) written as version 6 wrote them;
    returns each id with its parent."""
    made: dict[str, str | None] = {}
    with declaring(Session, 1):
        for n in range(count):
            if n % 4 == 3:
                fork = await Session.fork(f"s-{n - 1}", "m1", new_id=f"s-{n}", db=db)
                made[fork.id] = f"s-{n - 1}"
                continue
            session = await Session.open(f"s-{n}", db=db)
            await session.append_many(
                [MessageEntry(id=f"m{k}", role="user", content=f"{n}/{k}") for k in range(3)]
            )
            made[session.id] = None
        zero = db.keys.in_bucket(0)
        for parent in {p for p in made.values() if p}:  # version 6 kept no marks
            await db.client.delete(zero.owned("session", Session.FORKS, parent))
    await db.client.hset(db.keys.meta, "schema_version", "6")
    applied = [f"applied:flue:{label[5:9]}" for label in FROM_0007]
    await db.client.hdel(db.keys.meta, *applied, bucket_field("session"))
    return made


@pytest.fixture
async def version_6(redis_url: str, key_prefix: str) -> AsyncIterator[dict[str, str | None]]:
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        made = await sessions_in_one_bucket(db)
    yield made
    await remove_prefix(redis_url, key_prefix)


async def test_0007_moves_each_session_into_its_bucket_and_marks_each_fork(
    redis_url: str, key_prefix: str, version_6: dict[str, str | None]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        zero = db.keys.in_bucket(0)
        assert await db.client.zcard(zero.all("session")) == 40
        entries_before = sum(
            [await db.client.llen(zero.owned("session", "entries", i)) for i in version_6]
        )
        applied = await migrate(db)
        assert [s.file.label for s in applied] == FROM_0007
        assert (await stored_buckets(db))["session"] == SESSION_BUCKETS
        entries_after = 0
        for session_id in version_6:
            home = db.keys.in_bucket(bucket_of(session_id, SESSION_BUCKETS))
            assert await db.client.exists(home.record("session", session_id)) == 1
            entries_after += await db.client.llen(Session._entries_key(db.keys, session_id))
        assert entries_after == entries_before  # counted: no entry lost
        forks = {child: parent for child, parent in version_6.items() if parent}
        for child, parent in forks.items():
            assert await db.client.zscore(Session._forks_key(db.keys, parent), child) is not None
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        listed = await Session.list(limit=1000)
        assert sorted(s.id for s in listed.items) == sorted(version_6)
        loaded = await Session.load("s-3")
        assert loaded is not None
        assert [e.content for e in loaded.entries] == ["2/0", "2/1"]
        report = await verify_state((Session,))
        assert report.ok, report.all_drift
        with pytest.raises(fm.SessionForkedError):
            await Session.delete_id("s-2")
        assert await Session.delete_id("s-2", forks="cascade")
        assert await Session.get("s-3") is None


async def test_0007_refuses_while_another_client_uses_the_prefix_and_moves_nothing(
    redis_url: str, key_prefix: str, version_6: dict[str, str | None]
) -> None:
    async with refused_for_another_client(redis_url, key_prefix) as other:
        zero = other.keys.in_bucket(0)
        assert await other.client.zcard(zero.all("session")) == 40
        marks = [k async for k in other.client.scan_iter(match=f"{key_prefix}::*/forks:*")]
        assert marks == []  # checked before the first write: nothing marked either


async def test_0007_refuses_an_unreadable_fork_of_before_writing(
    redis_url: str, key_prefix: str, version_6: dict[str, str | None]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        zero = db.keys.in_bucket(0)
        await db.client.hset(zero.record("session", "s-7"), "fork_of", b"\xff\xfe")
        before = sorted([k async for k in db.client.scan_iter(match=f"{key_prefix}::*")])
        with pytest.raises(MigrationFailedError, match="0007") as failed:
            await migrate(db)
        assert "fork_of" in str(failed.value.__cause__)
        after = sorted([k async for k in db.client.scan_iter(match=f"{key_prefix}::*")])
        assert after == before


async def test_0007_down_gathers_the_sessions_back_and_removes_the_marks(
    redis_url: str, key_prefix: str, version_6: dict[str, str | None]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        await migrate(db)
        reverted = await migrate(db, to=6)
        assert [(s.file.label, s.direction) for s in reverted] == [
            (label, "down") for label in reversed(FROM_0007)
        ]
        assert "session" not in await stored_buckets(db)
        zero = db.keys.in_bucket(0)
        assert await db.client.zcard(zero.all("session")) == 40
        assert [k async for k in db.client.scan_iter(match=f"{key_prefix}::*/forks:*")] == []
        again = await migrate(db)  # and up again, as a rerun would
        assert [s.file.label for s in again] == FROM_0007
        assert (await verify_state((Session,))).ok
