"""Sessions on a real server: appends, atomic loads and snapshots, context, big entries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flue_models as fm
from flue_models import CompactionEntry, MessageEntry, Session, session_key
from flue_models.state.session import CHUNK_BYTES


def message(entry_id: str, parent: str | None, text: Any = "", role: str = "user") -> MessageEntry:
    return MessageEntry(id=entry_id, parent_id=parent, role=role, content=text)


async def test_open_is_idempotent_and_uses_the_server_clock(db: fm.Database) -> None:
    key = session_key("support", "eu-1", "claude", "main")
    before = await db.server_time()
    session = await Session.open(key, metadata={"user": "u1"})
    again = await Session.open(key, metadata={"user": "other"})
    assert again.metadata == {"user": "u1"}
    assert before <= session.created_at == again.created_at
    assert session.entries == []


async def test_appends_move_the_leaf_and_never_rewrite_earlier_entries(db: fm.Database) -> None:
    session = await Session.open("s-1")
    await session.append(message("m1", None, "hello"))
    entries_key = db.keys.session("s-1").entries
    first_element = await db.client.lindex(entries_key, 0)
    await session.append_many([message("m2", "m1", "hi", "assistant"), message("m3", "m2", "?")])
    assert session.leaf_id == "m3"
    assert session.entry_count == 3
    assert await db.client.lindex(entries_key, 0) == first_element  # byte for byte
    loaded = await Session.load("s-1")
    assert loaded is not None
    assert [e.id for e in loaded.entries] == ["m1", "m2", "m3"]
    assert (loaded.leaf_id, loaded.entry_count) == ("m3", 3)
    assert loaded.updated_at >= loaded.created_at


async def test_a_bad_batch_appends_nothing(db: fm.Database) -> None:
    session = await Session.open("s-2")
    with pytest.raises(fm.ConfigurationError, match="nothing was appended"):
        await session.append_many([message("m1", None), {"id": "m2"}])  # type: ignore[list-item]
    loaded = await Session.load("s-2")
    assert loaded is not None
    assert loaded.entries == []


async def test_metadata_is_saved_under_the_version_check_and_appends_do_not_conflict(
    db: fm.Database,
) -> None:
    session = await Session.open("s-3")
    stale = await Session.load("s-3")
    assert stale is not None
    await session.append(message("m1", None))  # an append does not change the version
    session.metadata = {"title": "first"}
    await session.save()
    stale.metadata = {"title": "second"}
    with pytest.raises(fm.ConflictError):
        await stale.save()
    loaded = await Session.load("s-3")
    assert loaded is not None
    assert (loaded.metadata, loaded.leaf_id) == ({"title": "first"}, "m1")


async def test_snapshots_replace_everything_and_loads_never_see_a_mix(
    db: fm.Database, redis_url: str, protocol: int
) -> None:
    other = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    try:
        await Session.open("s-snap")

        def snapshot(i: int) -> list[MessageEntry]:
            return [
                message(f"{i}-{n}", f"{i}-{n - 1}" if n else None, {"i": i}) for n in range(i + 1)
            ]

        async def writer(i: int) -> None:
            await Session.save_snapshot("s-snap", snapshot(i), metadata={"i": i}, db=db)

        async def reader() -> Session | None:
            return await Session.load("s-snap", db=other)

        results = await asyncio.gather(
            *(writer(i) for i in range(10)), *(reader() for _ in range(20))
        )
        for loaded in results[10:]:
            assert loaded is not None
            i = loaded.metadata.get("i")
            if i is None:  # read before any snapshot landed
                assert loaded.entries == []
                continue
            assert [e.id for e in loaded.entries] == [e.id for e in snapshot(i)]
            assert {e.content["i"] for e in loaded.entries if isinstance(e, MessageEntry)} == {i}
            assert loaded.leaf_id == f"{i}-{i}"
    finally:
        await other.close()


async def test_delete_removes_the_session_and_its_entries(db: fm.Database) -> None:
    session = await Session.open("s-del")
    await session.append(message("m1", None))
    assert await Session.delete_id("s-del") is True
    assert await Session.load("s-del") is None
    assert not await db.client.exists(db.keys.session("s-del").entries)
    assert await Session.delete_id("s-del") is False  # deleting a missing session does nothing
    with pytest.raises(fm.ConflictError):
        await session.append(message("m2", "m1"))


async def test_context_is_the_latest_summary_and_the_kept_branch(db: fm.Database) -> None:
    session = await Session.open("s-ctx")
    await session.append_many(
        [
            message("m1", None, "a"),
            message("m2", "m1", "b", "assistant"),
            message("m3", "m2", "c"),
            CompactionEntry(id="c1", parent_id="m3", summary="first summary",
                            first_kept_entry_id="m2", tokens_before=100),
            message("m4", "c1", "d", "assistant"),
            message("x1", "m1", "abandoned branch"),
            message("m5", "m4", "e"),
        ]
    )  # fmt: skip
    loaded = await Session.load("s-ctx")
    assert loaded is not None
    context = loaded.context()
    assert context.summary == "first summary"
    assert [m.id for m in context.messages] == ["m2", "m3", "m4", "m5"]
    plain = await Session.open("s-plain")
    await plain.append_many([message("m1", None), message("m2", "m1")])
    assert [m.id for m in plain.context().messages] == ["m1", "m2"]
    assert plain.context().summary is None


async def test_a_twenty_megabyte_entry_is_chunked_and_round_trips(db: fm.Database) -> None:
    session = await Session.open("s-big")
    big = "".join(chr(0x41 + i % 26) + "é" for i in range(10 * 1024 * 1024))  # ~30 MB UTF-8
    await session.append(message("m1", None, big))
    await session.append(message("m2", "m1", "small"))
    entries_key = db.keys.session("s-big").entries
    assert await db.client.llen(entries_key) > 40
    longest = 0
    for index in range(await db.client.llen(entries_key)):
        element = await db.client.lindex(entries_key, index)
        assert element is not None
        longest = max(longest, len(element))
    assert longest <= CHUNK_BYTES + 1
    loaded = await Session.load("s-big")
    assert loaded is not None
    first = loaded.entries[0]
    assert isinstance(first, MessageEntry)
    assert first.content == big
    assert [e.id for e in loaded.entries] == ["m1", "m2"]


async def test_a_damaged_entry_list_raises_naming_the_key(db: fm.Database) -> None:
    session = await Session.open("s-bad")
    await session.append(message("m1", None))
    await db.client.rpush(db.keys.session("s-bad").entries, b"garbage")
    with pytest.raises(fm.DecodeError, match=r"session:\d+}/entries.*entries\[1\]"):
        await Session.load("s-bad")


async def test_an_append_is_safe_to_retry_and_the_same_id_with_other_content_is_refused(
    db: fm.Database,
) -> None:
    session = await fm.Session.open("s-once")
    first = fm.MessageEntry(id="m1", role="user", content="hello")
    big = fm.MessageEntry(id="m2", role="assistant", content="x" * (3 * 512 * 1024))  # chunked
    await session.append_many([first, big])
    for _ in range(2):  # the replies were lost: the caller tries again
        retry = await fm.Session.load("s-once")
        assert retry is not None
        await retry.append_many([first, big])
        assert retry.entry_count == 2
    loaded = await fm.Session.load("s-once")
    assert loaded is not None
    assert [(e.id, e.parent_id) for e in loaded.entries] == [("m1", None), ("m2", "m1")]

    other = fm.MessageEntry(id="m1", role="user", content="something else")
    with pytest.raises(fm.ConflictError, match=r"'m1'.*other content"):
        await loaded.append(other)
    fresh = fm.MessageEntry(id="m3", role="user", content="next")
    with pytest.raises(fm.ConflictError, match="nothing was appended"):
        await loaded.append_many([first, fresh])  # only some were appended
    with pytest.raises(fm.ConfigurationError, match="'m3' with other content"):
        await loaded.append_many([fresh, fm.MessageEntry(id="m3", role="user", content="?")])
    after = await fm.Session.load("s-once")
    assert after is not None
    assert after.entry_count == 2

    await loaded.append(fresh)
    await loaded.append(fresh)  # the same entry again: nothing written
    await loaded.append_many([fresh, fresh])
    final = await fm.Session.load("s-once")
    assert final is not None
    assert [(e.id, e.parent_id) for e in final.entries] == [
        ("m1", None),
        ("m2", "m1"),
        ("m3", "m2"),
    ]
    # An entry stored before, sent again after the leaf it did not take: the same but
    # for its parent, so a replay; the leaf and the count stay.
    await final.append(first)
    again = await fm.Session.load("s-once")
    assert again is not None
    assert (again.entry_count, again.leaf_id, len(again.entries)) == (3, "m3", 3)


async def test_plain_appends_continue_the_conversation_and_none_starts_a_branch(
    db: fm.Database,
) -> None:
    session = await fm.Session.open("s-plain")
    await session.append(fm.MessageEntry(role="user", content="hello"))
    await session.append(fm.MessageEntry(role="assistant", content="hi"))
    await session.append_many(
        [fm.MessageEntry(role="user", content="a"), fm.MessageEntry(role="user", content="b")]
    )
    loaded = await fm.Session.load("s-plain")
    assert loaded is not None
    assert [m.content for m in loaded.context().messages] == ["hello", "hi", "a", "b"]
    assert all(len(e.id) == 32 for e in loaded.entries)  # default ids
    assert session.entries == loaded.entries  # this copy holds what was stored
    marked = fm.MessageEntry(id="odd", role="user", content=["\x00leaf\x00"])  # as the mark
    await session.append(marked)
    await fm.Session(**session.model_dump()).append(marked)  # a replay from an older leaf
    assert session.entries[-1] == marked.model_copy(update={"parent_id": session.entries[-2].id})
    await session.append(fm.MessageEntry(role="user", content="anew", parent_id=None))
    again = await fm.Session.load("s-plain")
    assert again is not None
    assert [m.content for m in again.context().messages] == ["anew"]  # a new root
    assert again.entries[-1].parent_id is None


async def test_racing_plain_appends_follow_the_stored_leaf(db: fm.Database) -> None:
    await fm.Session.open("s-race")
    copies = [await fm.Session.load("s-race") for _ in range(8)]  # all at the empty leaf
    await asyncio.gather(
        *(
            c.append(fm.MessageEntry(id=f"m{n}", role="user", content=str(n)))  # type: ignore[union-attr]
            for n, c in enumerate(copies)
        )
    )
    loaded = await fm.Session.load("s-race")
    assert loaded is not None
    context = loaded.context().messages
    assert sorted(m.id for m in context) == [f"m{n}" for n in range(8)]  # one chain, no branch
    assert [m.parent_id for m in context] == [None, *(m.id for m in context[:-1])]
    # A copy whose leaf is behind appends the same entry again: a replay, not a branch.
    stale = copies[0]
    assert stale is not None
    await stale.append(fm.MessageEntry(id="m0", role="user", content="0"))
    big = fm.MessageEntry(id="big", role="user", content="x" * (2 * CHUNK_BYTES))  # chunked
    await loaded.append(big)
    await stale.append(big)  # stored after m7, sent after this copy's older leaf
    assert (await fm.Session.load("s-race")).entry_count == 9  # type: ignore[union-attr]
    with pytest.raises(fm.ConflictError, match="'big'"):
        await stale.append(fm.MessageEntry(id="big", role="user", content="x"))


async def test_a_parent_must_name_an_entry_of_the_history(db: fm.Database) -> None:
    session = await fm.Session.open("s-orphan")
    await session.append_many([message("m1", None), message("m2", "m1")])
    with pytest.raises(fm.NotFoundError, match=r"'m5' names parent 'nope'.*nothing was appended"):
        await session.append_many([message("m3", "m1"), message("m4", "m3"), message("m5", "nope")])
    with pytest.raises(fm.NotFoundError, match="'m4'"):  # a parent later in the same call
        await session.append_many([message("m4", "m5"), message("m5", "m1")])
    assert (await fm.Session.load("s-orphan")).entry_count == 2  # type: ignore[union-attr]
    await session.append(message("m3", "m1"))  # a branch from an earlier entry
    # A fork may name entries it shares with its parent, not the parent's later ones.
    await session.append(message("m4", "m3"))
    child = await fm.Session.fork("s-orphan", "m2", new_id="s-orphan-child")
    await child.append(message("c1", "m1"))
    with pytest.raises(fm.NotFoundError, match="'m4'"):
        await child.append(message("c2", "m4"))
    with pytest.raises(fm.NotFoundError, match="no earlier entry of the snapshot"):
        await fm.Session.save_snapshot("s-snap-bad", [message("a", "b"), message("b", None)])
    assert await fm.Session.get("s-snap-bad") is None


def test_make_id_is_a_plain_id_and_entries_default_to_one() -> None:
    assert isinstance(fm.make_id(), str)
    assert fm.make_id() != fm.make_id()
    assert len(fm.MessageEntry(role="user").id) == 32
    assert fm.CompactionEntry(summary="s", first_kept_entry_id="m1", tokens_before=1).id


async def test_appends_know_the_entries_of_a_snapshot_and_deletion_takes_the_index(
    db: fm.Database,
) -> None:
    entries = [fm.MessageEntry(id=f"m{n}", role="user", content=str(n)) for n in range(3)]
    session = await fm.Session.save_snapshot("s-snap", entries)
    assert [e.parent_id for e in session.entries] == [None, "m0", "m1"]  # each follows
    await session.append(entries[1])  # already there: nothing written
    assert (await fm.Session.load("s-snap")).entry_count == 3  # type: ignore[union-attr]
    assert await fm.Session.delete_id("s-snap")
    assert [k async for k in db.client.scan_iter(match=db.keys.absolute("session/*"))] == []


async def test_after_an_append_this_copy_knows_the_row_as_stored(db: fm.Database) -> None:
    from flue_models.model.spec import OWNED_FIELD
    from flue_models.model.writes import held

    session = await fm.Session.open(session_key("support", "eu-1", "claude", "known"))
    for n in range(3):
        await session.append(fm.MessageEntry(id=f"m{n}", role="user", content=str(n)))
        spec = fm.Session.__flue_spec__
        keys = spec.keys_of(db.keys, session.id)
        stored = await db.client.hget(keys.session(session.id)[0], OWNED_FIELD)
        assert held(session).snapshot[OWNED_FIELD] == stored  # byte for byte
        assert held(session).entries == spec.entries(keys, session._values())
    session.metadata = {"user": "u1"}
    await session.save()  # the copy's own state is what the store holds: no conflict
    loaded = await fm.Session.load(session.id)
    assert loaded is not None
    assert (loaded.metadata, loaded.entry_count) == ({"user": "u1"}, 3)


@pytest.mark.parametrize("how", ["copy", "model_copy", "model_copy_update"])
async def test_copies_of_a_session_never_share_their_entries(db: fm.Database, how: str) -> None:
    """An append extends its own copy's list in place; a copy made before it keeps its
    own list, and the copy's appends leave the original's alone."""
    import copy

    session = await fm.Session.open("s-copies")
    await session.append(fm.MessageEntry(id="m0", role="user", content="first"))
    made = {
        "copy": lambda: copy.copy(session),
        "model_copy": lambda: session.model_copy(),
        "model_copy_update": lambda: session.model_copy(update={"metadata": {"u": 1}}),
    }[how]
    other = made()
    held_list = session.entries
    await session.append(fm.MessageEntry(id="m1", role="user", content="second"))
    assert [e.id for e in session.entries] == ["m0", "m1"]
    assert session.entries is held_list  # the same list, grown in place
    assert [e.id for e in other.entries] == ["m0"]  # the copy's own list did not grow
    await other.append(fm.MessageEntry(id="m2", role="user", content="third"))
    # This copy's entries: as of its load and its own appends (m2 went after the stored
    # leaf, m1, which this copy never read).
    assert [(e.id, e.parent_id) for e in other.entries] == [("m0", None), ("m2", "m1")]
    assert [e.id for e in session.entries] == ["m0", "m1"]
