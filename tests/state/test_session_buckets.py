"""Sessions in 64 buckets: a fork and its parent in two buckets (two Cluster slots), the
mark that keeps the parent while the fork lives, and every way the two steps of a fork
or of a fork's deletion can stop half way."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import pytest

import flue_models as fm
from flue_models import MessageEntry, Session
from flue_models.keys import bucket_of
from flue_models.model.writes import plan_delete, run_writes
from flue_models.slots import slot_of
from flue_models.state.integrity import verify_state
from flue_models.state.session import FORK_GRACE, SESSION_BUCKETS, forks as session_module
from tests.integration.roundtrips import count_round_trips


def message(entry_id: str, parent: str | None) -> MessageEntry:
    return MessageEntry(id=entry_id, parent_id=parent, role="user", content=entry_id)


def apart_from(session_id: str, stem: str = "fork") -> str:
    """An id whose bucket is not ``session_id``'s."""
    home = bucket_of(session_id, SESSION_BUCKETS)
    return next(
        f"{stem}-{n}" for n in range(1000) if bucket_of(f"{stem}-{n}", SESSION_BUCKETS) != home
    )


async def parent_with(entries: int, session_id: str = "p") -> Session:
    parent = await Session.open(session_id)
    await parent.append_many([message(f"m{n}", f"m{n - 1}" if n else None) for n in range(entries)])
    return parent


async def marks(db: fm.Database, session_id: str) -> dict[str, float]:
    found = await db.client.zrange(db.keys.session(session_id).forks, 0, -1, withscores=True)
    return {fm.replies.reply_text(m[0]): m[1] for m in found}


async def age_marks(db: fm.Database, session_id: str) -> None:
    """Set every mark of ``session_id`` back by more than FORK_GRACE (as if that much time
    had passed since it was made)."""
    key = db.keys.session(session_id).forks
    old = (await db.server_time() - FORK_GRACE - dt.timedelta(seconds=1)).timestamp() * 1000
    for child in await marks(db, session_id):
        await db.client.zadd(key, {child: int(old)})


async def test_sessions_spread_over_the_buckets_and_a_session_keeps_one_slot(
    db: fm.Database,
) -> None:
    ids = [f"s-{n}" for n in range(200)]
    for session_id in ids:
        session = await Session.open(session_id)
        await session.append(message("m0", None))
    buckets = {bucket_of(i, SESSION_BUCKETS) for i in ids}
    assert len(buckets) > SESSION_BUCKETS // 2
    for session_id in ids[:20]:
        keys = [db.keys.session(session_id).row, *Session.owned_keys(db.keys, session_id)]
        assert len({slot_of(k) for k in keys}) == 1
        assert await db.client.exists(*keys[:3]) == 3  # row, entries, entry ids
    listed = await Session.list(limit=1000)
    assert sorted(s.id for s in listed.items) == sorted(ids)


async def test_a_fork_in_another_bucket_shares_history_and_is_marked_on_its_parent(
    db: fm.Database,
) -> None:
    await parent_with(6)
    child_id = apart_from("p")
    child = await Session.fork("p", "m3", new_id=child_id)
    assert child_id in await marks(db, "p")
    await child.append(message("x", "m3"))
    loaded = await Session.load(child_id)
    assert loaded is not None
    assert [e.id for e in loaded.entries] == ["m0", "m1", "m2", "m3", "x"]
    context = await Session.load_context(child_id)
    assert context is not None
    assert [m.id for m in context.context().messages] == ["m0", "m1", "m2", "m3", "x"]
    grandchild = await Session.fork(child_id, "m1", new_id=apart_from(child_id, "gc"))
    assert [e.id for e in (await Session.load(grandchild.id)).entries] == ["m0", "m1"]

    with pytest.raises(fm.SessionForkedError):
        await Session.delete_id("p")
    with pytest.raises(fm.SessionForkedError):
        await Session.save_snapshot("p", [message("y", None)])
    assert await Session.delete_id("p", forks="cascade")
    left = [k async for k in db.client.scan_iter(match=db.keys.pattern())]
    assert [k for k in left if not k.endswith(b":version")] == [db.keys.meta.encode()]


async def test_deleting_a_fork_takes_its_mark_and_frees_the_parent(db: fm.Database) -> None:
    await parent_with(3)
    child = await Session.fork("p", "m1", new_id=apart_from("p"))
    assert await child.delete()
    assert await marks(db, "p") == {}
    assert await Session.delete_id("p")


async def test_a_fork_that_stopped_after_its_mark_keeps_the_parent_until_the_grace_passed(
    db: fm.Database,
) -> None:
    await parent_with(3)
    now = int((await db.server_time()).timestamp() * 1000)
    await db.client.zadd(db.keys.session("p").forks, {"never-written": now})  # fork killed here
    with pytest.raises(fm.SessionForkedError):
        await Session.delete_id("p")  # a young mark: a fork may be being made
    with pytest.raises(fm.SessionForkedError):
        await Session.delete_id("p", forks="cascade")
    assert await Session.get("p") is not None
    report = await verify_state((Session,))
    assert [d.kind for d in report.all_drift] == ["fork_mark"]
    await age_marks(db, "p")
    assert await Session.delete_id("p")
    assert await marks(db, "p") == {}


async def test_a_fork_deleted_before_its_mark_was_taken_leaves_the_parent_deletable(
    db: fm.Database,
) -> None:
    await parent_with(3)
    child = await Session.fork("p", "m1", new_id=apart_from("p"))
    await run_writes(db, [plan_delete(child, db.keys)])  # killed before the unmark
    await age_marks(db, "p")
    assert await Session.delete_id("p")


async def test_a_parent_deleted_while_it_is_forked_leaves_no_fork(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent's deletion takes the mark between the fork's two steps: the fork is
    deleted again and refused, so no fork outlives its history."""
    await parent_with(3)
    child_id = apart_from("p")
    real = session_module.run_writes

    async def then_the_mark_goes(database: fm.Database, writes: list[Any]) -> None:
        await real(database, writes)
        if writes[0].record.id == child_id and writes[0].mode == "s":
            await database.client.zrem(database.keys.session("p").forks, child_id)

    monkeypatch.setattr(session_module, "run_writes", then_the_mark_goes)
    with pytest.raises(fm.ConflictError, match="deleted while"):
        await Session.fork("p", "m1", new_id=child_id)
    monkeypatch.undo()
    assert await Session.get(child_id) is None
    assert await Session.delete_id("p")


async def test_a_fork_onto_a_taken_id_is_refused_and_leaves_no_mark(db: fm.Database) -> None:
    await parent_with(3)
    taken = apart_from("p", "taken")
    await Session.open(taken)
    with pytest.raises(fm.AlreadyExistsError):
        await Session.fork("p", "m1", new_id=taken)
    assert await marks(db, "p") == {}
    retry = await Session.fork("p", "m1", new_id=apart_from("p"))
    with pytest.raises(fm.AlreadyExistsError):  # the same fork again keeps its mark
        await Session.fork("p", "m1", new_id=retry.id)
    assert list(await marks(db, "p")) == [retry.id]


async def test_verify_finds_and_repairs_a_missing_mark(db: fm.Database) -> None:
    await parent_with(3)
    child = await Session.fork("p", "m1", new_id=apart_from("p"))
    await db.client.delete(db.keys.session("p").forks)  # a hand edit
    report = await verify_state((Session,))
    assert [(d.kind, d.record_id) for d in report.all_drift] == [("fork_mark", child.id)]
    repaired = await verify_state((Session,), repair=True)
    assert repaired.ok
    assert repaired.repaired == 1
    assert child.id in await marks(db, "p")
    with pytest.raises(fm.SessionForkedError):  # guarded again
        await Session.save_snapshot("p", [message("y", None)])


async def test_forks_racing_a_cascading_delete_leave_no_fork_without_its_parent(
    db: fm.Database,
) -> None:
    await parent_with(4)
    ids = [f"race-{n}" for n in range(12)]

    async def fork(child_id: str) -> str | None:
        try:
            return (await Session.fork("p", "m2", new_id=child_id)).id
        except (fm.ConflictError, fm.NotFoundError):
            return None  # refused: the parent went (or was going)

    async def delete() -> bool:
        try:
            return await Session.delete_id("p", forks="cascade")
        except fm.SessionForkedError:
            return False  # forks kept appearing: the parent stays

    *_forked, deleted = await asyncio.gather(*(fork(i) for i in ids), delete())
    children = [s for s in await Session.get_many(ids) if s is not None]
    if await Session.get("p") is None:
        assert deleted
        assert children == []
    else:
        assert set(await marks(db, "p")) >= {c.id for c in children}
    report = await verify_state((Session,))
    assert report.ok, report.all_drift


async def test_a_marks_key_of_another_type_is_refused_naming_it_and_nothing_is_written(
    db: fm.Database,
) -> None:
    parent = await parent_with(3)
    forks_key = db.keys.session("p").forks
    await db.client.set(forks_key, "not a sorted set")  # a hand edit, or another program
    child_id = apart_from("p")
    with pytest.raises(fm.CorruptDataError, match=re.escape(forks_key)):
        await Session.fork("p", "m1", new_id=child_id)
    assert await Session.get(child_id) is None
    with pytest.raises(fm.CorruptDataError, match=re.escape(forks_key)):
        await parent.delete()
    assert await Session.get("p") is not None
    report = await verify_state((Session,))
    assert [d.kind for d in report.all_drift] == ["wrong_type"]


async def test_a_session_without_forks_is_deleted_in_one_call_and_a_fork_in_two(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete's guard looks at the marks; they are read only when it refuses."""
    parent = await parent_with(3)
    child = await Session.fork("p", "m1", new_id=apart_from("p"))
    with count_round_trips(db, monkeypatch) as trips:
        assert await child.delete()
    assert trips[0] == 2  # the delete, then its mark taken off the parent
    with count_round_trips(db, monkeypatch) as trips:
        assert await parent.delete()
    assert trips[0] == 1
