"""Sessions that cost what the context costs: context loads, history pages, compaction
racing appends, forks and listings, on a real server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

import flue_models as fm
from flue_models import CompactionEntry, MessageEntry, Session, session_key
from flue_models.state.session import CHUNK_BYTES, MAX_FORK_DEPTH, encode_entry
from flue_models.state.session_window import AnyEntry
from tests.proxy import ReplyDropper


def message(entry_id: str, parent: str | None, text: Any = "") -> MessageEntry:
    return MessageEntry(id=entry_id, parent_id=parent, role="user", content=text)


def compaction(entry_id: str, parent: str, first_kept: str) -> CompactionEntry:
    return CompactionEntry(
        id=entry_id, parent_id=parent, summary=f"up to {first_kept}",
        first_kept_entry_id=first_kept, tokens_before=1,
    )  # fmt: skip


async def linear(session: Session, count: int, prefix: str = "m", text: Any = "") -> list[str]:
    """Append ``count`` messages, each the child of the leaf; return their ids."""
    ids: list[str] = []
    parent = session.leaf_id
    for start in range(0, count, 1000):
        batch = []
        for n in range(start, min(start + 1000, count)):
            batch.append(message(f"{prefix}{n}", parent, text))
            parent = f"{prefix}{n}"
        await session.append_many(batch)
        ids += [entry.id for entry in batch]
    return ids


def ids(entries: list[AnyEntry] | list[MessageEntry]) -> list[str]:
    return [entry.id for entry in entries]


# Context loads ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
async def test_a_context_load_gives_the_context_of_a_full_load(db: fm.Database, seed: int) -> None:
    """Random trees: messages under the leaf or an earlier entry, compactions keeping an
    ancestor or an entry off the branch, some entries chunked; every context load agrees
    with the full load, and reads a suffix of the history."""
    rng = random.Random(seed)
    session = await Session.open(f"s-{seed}")
    known: list[str] = []
    for n in range(rng.randint(20, 120)):
        leaf = session.leaf_id
        roll = rng.random()
        parent = leaf if roll < 0.8 or not known else rng.choice(known)
        if known and roll > 0.9:
            entry: AnyEntry = compaction(f"c{n}", parent or known[-1], rng.choice(known))
        else:
            text = "x" * (CHUNK_BYTES + 10) if rng.random() < 0.02 else f"t{n}"
            entry = message(f"m{n}", parent, text)
        await session.append(entry)
        known.append(entry.id)
        if rng.random() < 0.2 or n % 25 == 0:
            full = await Session.load(session.id)
            partial = await Session.load_context(session.id)
            assert full is not None
            assert partial is not None
            assert partial.context() == full.context()
            assert ids(partial.entries) == ids(full.entries)[-len(partial.entries) :]


@pytest.mark.standalone  # it counts bytes through a proxy in front of the one server
async def test_a_context_load_of_a_long_session_reads_only_the_context(
    redis_url: str, key_prefix: str, protocol: int
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        ReplyDropper(port).running() as proxy,
        fm.connect(
            f"redis://127.0.0.1:{proxy.port}/0", key_prefix=key_prefix, protocol=protocol
        ) as db,
    ):
        try:
            session = await Session.open("long")
            history = await linear(session, 50_000, text="some words of a message " * 4)
            await session.append(compaction("c", history[-1], history[-40]))
            await linear(session, 5, prefix="after")

            proxy.received = 0
            partial = await Session.load_context("long")
            context_bytes = proxy.received
            proxy.received = 0
            full = await Session.load("long")
            full_bytes = proxy.received
        finally:
            await db.client.delete(*[k async for k in db.client.scan_iter(match=db.keys.pattern())])
    assert partial is not None
    assert full is not None
    assert partial.context() == full.context()
    assert len(partial.context().messages) == 45
    assert len(partial.entries) == 46  # 40 kept, the compaction, 5 after: nothing else
    per_entry = full_bytes / len(full.entries)
    assert context_bytes < 46 * per_entry + 4096  # the record and the reply's framing
    assert full_bytes > 50 * context_bytes


async def test_a_branch_that_leaves_the_compacted_line_is_read_further_back(
    db: fm.Database,
) -> None:
    session = await Session.open("s")
    history = await linear(session, 300)
    await session.append(compaction("c", history[-1], history[-10]))
    await session.append(message("side", history[100]))  # a retry from an old entry
    partial = await Session.load_context("s")
    full = await Session.load("s")
    assert partial is not None
    assert full is not None
    assert partial.context() == full.context()
    assert ids(partial.context().messages) == [*history[:101], "side"]


async def test_a_copy_loaded_for_its_context_keeps_answering_after_appends(
    db: fm.Database,
) -> None:
    session = await Session.open("s")
    history = await linear(session, 100)
    await session.append(compaction("c", history[-1], history[-5]))
    partial = await Session.load_context("s")
    assert partial is not None
    await partial.append(message("next", "c"))
    assert ids(partial.context().messages) == [*history[-5:], "next"]
    await partial.append(compaction("c2", "next", history[3]))  # keeps what it did not read
    with pytest.raises(fm.ConflictError, match="load_context"):
        partial.context()
    again = await Session.open("s", context_only=True)
    assert again is not None
    assert ids(again.context().messages) == [*history[3:], "next"]


async def test_appends_racing_a_compaction_lose_nothing(db: fm.Database) -> None:
    session = await Session.open("s")
    history = await linear(session, 50)
    writers = [await Session.load_context("s") for _ in range(4)]

    async def writer(n: int, copy: Session | None) -> None:
        assert copy is not None
        for k in range(25):
            await copy.append(message(f"w{n}-{k}", history[-1]))

    async def compactor() -> None:
        for k in range(10):
            await session.append(compaction(f"c{k}", history[-1], history[-10 + k]))

    await asyncio.gather(compactor(), *(writer(n, c) for n, c in enumerate(writers)))
    full = await Session.load("s")
    assert full is not None
    expected = {*history, *(f"w{n}-{k}" for n in range(4) for k in range(25))}
    expected |= {f"c{k}" for k in range(10)}
    assert set(ids(full.entries)) == expected
    assert full.entry_count == len(expected) == len(full.entries)
    assert (await fm.verify_state((Session,))).ok


# History pages ---------------------------------------------------------------------------


async def test_history_pages_backwards_through_every_entry(db: fm.Database) -> None:
    session = await Session.open("s")
    history = await linear(session, 250)
    await session.append(message("big", history[-1], "y" * (2 * CHUNK_BYTES + 1)))
    await session.append(message("last", "big"))
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await Session.history("s", before=cursor, limit=100)
        assert page is not None
        pages.append(ids(page.entries))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [100, 100, 52]
    assert [i for p in reversed(pages) for i in p] == [*history, "big", "last"]


async def test_history_refuses_a_bad_cursor_and_a_missing_session_is_none(
    db: fm.Database,
) -> None:
    await Session.open("s")
    with pytest.raises(fm.ConfigurationError, match="cursor"):
        await Session.history("s", before="-3")
    assert await Session.history("nobody") is None
    assert await Session.load_context("nobody") is None
    empty = await Session.history("s")
    assert empty is not None
    assert empty.entries == []
    assert empty.next_cursor is None


# Forks -----------------------------------------------------------------------------------


async def test_a_fork_shares_history_up_to_its_entry_and_appends_its_own(
    db: fm.Database,
) -> None:
    parent = await Session.open("p")
    history = await linear(parent, 20)
    child = await Session.fork("p", "m9", new_id="c", metadata={"why": "retry"})
    await parent.append(message("p-after", history[-1]))
    await child.append(message("c-own", "m9"))

    loaded = await Session.load("c")
    assert loaded is not None
    assert ids(loaded.entries) == [*history[:10], "c-own"]
    assert loaded.entry_count == 11
    assert loaded.leaf_id == "c-own"
    assert loaded.origin is not None
    assert loaded.origin.parent == "p"
    assert loaded.metadata == {"why": "retry"}
    assert ids(loaded.context().messages) == [*history[:10], "c-own"]
    assert await db.client.llen(db.keys.session("c").entries) == 1  # not copied
    partial = await Session.load_context("c")
    assert partial is not None
    assert partial.context() == loaded.context()
    parent_now = await Session.load("p")
    assert parent_now is not None
    assert "c-own" not in ids(parent_now.entries)
    assert (await fm.verify_state((Session,))).ok


async def test_a_fork_of_a_fork_and_forks_at_compacted_and_chunked_entries(
    db: fm.Database,
) -> None:
    root = await Session.open("r")
    history = await linear(root, 60)
    await root.append(message("big", history[-1], "z" * (CHUNK_BYTES + 5)))
    await root.append(compaction("c1", "big", history[50]))
    await linear(root, 10, prefix="n")
    first = await Session.fork("r", "n4", new_id="f1")  # after the compaction
    assert first.entry_count == 60 + 2 + 5  # the chunked entry counts once
    await linear(first, 3, prefix="f")
    second = await Session.fork("f1", "c1", new_id="f2")  # in f1's shared history
    await second.append(message("own", "c1"))
    early = await Session.fork("f1", history[20], new_id="f3")  # before the compaction

    for fork_id in ("f1", "f2", "f3"):
        full = await Session.load(fork_id)
        partial = await Session.load_context(fork_id)
        assert full is not None
        assert partial is not None
        assert partial.context() == full.context()
        assert full.entry_count == len(full.entries)
    f2 = await Session.load("f2")
    assert f2 is not None
    assert ids(f2.entries) == [*history, "big", "c1", "own"]
    assert early.entry_count == 21
    assert early.context_from == 20
    assert (await fm.verify_state((Session,))).ok


async def test_a_session_with_forks_is_not_deleted_or_replaced_unless_cascading(
    db: fm.Database,
) -> None:
    parent = await Session.open("p")
    await linear(parent, 5)
    await Session.fork("p", "m2", new_id="c1")
    await Session.fork("c1", "m1", new_id="c2")
    with pytest.raises(fm.SessionForkedError, match="'p' has forks"):
        await Session.delete_id("p")
    with pytest.raises(fm.SessionForkedError):
        await Session.save_snapshot("p", [message("x", None)])
    with pytest.raises(fm.ConflictError, match="is a fork"):
        await Session.save_snapshot("c1", [message("x", None)])
    assert (await Session.load("c2")) is not None  # nothing changed
    assert await Session.delete_id("p", forks="cascade")
    for gone in ("p", "c1", "c2"):
        assert await Session.get(gone) is None
    left = {k async for k in db.client.scan_iter(match=db.keys.pattern())}
    spec = Session.__flue_spec__
    counters = {
        spec.keys_of(db.keys, i).version_counter("session").encode() for i in ("p", "c1", "c2")
    }
    assert left == {db.keys.meta.encode(), *counters}  # nothing but each bucket's counter


async def test_a_fork_refuses_a_missing_session_entry_or_depth(db: fm.Database) -> None:
    parent = await Session.open("p")
    await linear(parent, 3)
    await parent.append(message("later", "m2"))
    with pytest.raises(fm.NotFoundError, match="no session"):
        await Session.fork("nobody", "m1")
    with pytest.raises(fm.NotFoundError, match="no entry 'zz'"):
        await Session.fork("p", "zz")
    child = await Session.fork("p", "m1", new_id="c")
    with pytest.raises(fm.NotFoundError, match="no entry 'later'"):
        await Session.fork("c", "later")  # the parent's entry after the fork point
    with pytest.raises(fm.AlreadyExistsError):
        await Session.fork("p", "m1", new_id="c")
    current = child.id
    for depth in range(MAX_FORK_DEPTH - 1):  # c is one deep
        current = (await Session.fork(current, "m0", new_id=f"d{depth}")).id
    with pytest.raises(fm.ConflictError, match="MAX_FORK_DEPTH"):
        await Session.fork(current, "m0")


# Listings --------------------------------------------------------------------------------


async def test_sessions_are_listed_by_key_part_most_recently_updated_first(
    db: fm.Database,
) -> None:
    made = []
    for agent, instance in [("support", "eu"), ("support", "us"), ("sales", "eu")]:
        for name in ("a", "b"):
            made.append(await Session.open(session_key(agent, instance, "claude", name)))
    plain = await Session.open("plain")
    await made[0].append(message("m1", None))  # support/eu/claude/a moves to the front

    support = await Session.list(agent="support")
    assert [s.id for s in support.items] == [
        "support/eu/claude/a", "support/us/claude/b", "support/us/claude/a",
        "support/eu/claude/b",
    ]  # fmt: skip
    assert {s.id for s in (await Session.list(instance="eu")).items} == {
        "support/eu/claude/a", "support/eu/claude/b", "sales/eu/claude/a", "sales/eu/claude/b",
    }  # fmt: skip
    everyone = await Session.list(limit=3)
    assert everyone.items[0].id == "support/eu/claude/a"
    assert everyone.next_cursor
    rest = await Session.list(limit=10, cursor=everyone.next_cursor)
    listed = [s.id for s in everyone.items + rest.items]
    assert sorted(listed) == sorted([*(s.id for s in made), plain.id])
    assert not rest.next_cursor
    assert (await Session.list(harness="claude", agent="sales")).items[0].agent == "sales"
    fork = await Session.fork("support/eu/claude/a", "m1", new_id="f")
    assert [s.id for s in (await Session.list(fork_of="support/eu/claude/a")).items] == [fork.id]
    assert (await fm.verify_collection(Session)).ok  # index scores follow the appends


@pytest.fixture
async def second_client(
    redis_url: str, key_prefix: str, protocol: int
) -> AsyncIterator[fm.Database]:
    async with fm.connect(redis_url, key_prefix=key_prefix, protocol=protocol) as other:
        yield other


async def test_a_metadata_save_from_a_stale_copy_keeps_the_listing_order(
    db: fm.Database, second_client: fm.Database
) -> None:
    first = await Session.open("a")
    await Session.open("b")
    stale = await Session.get("a", db=second_client)
    assert stale is not None
    await first.append(message("m1", None))
    stale.metadata = {"k": 1}
    await stale.save()
    assert [s.id for s in (await Session.list()).items] == ["a", "b"]
    assert (await fm.verify_collection(Session)).ok


# Hostile and corrupted data --------------------------------------------------------------


async def test_a_cycle_of_parent_links_ends_the_walk(db: fm.Database) -> None:
    # The API refuses a parent that names nothing earlier: the cycle is written by hand.
    await Session.save_snapshot("s", [message("a", None), message("b", "a")])
    entries_key = db.keys.session("s").entries
    await db.client.lset(entries_key, 0, encode_entry(message("a", "b"))[0])
    full = await Session.load("s")
    partial = await Session.load_context("s")
    assert full is not None
    assert partial is not None
    assert ids(full.context().messages) == ["a", "b"]
    assert partial.context() == full.context()


async def test_a_corrupted_fork_origin_refuses_appends_and_reads_name_the_key(
    db: fm.Database,
) -> None:
    parent = await Session.open("p")
    await linear(parent, 3)
    child = await Session.fork("p", "m1", new_id="c")
    record = db.keys.session("c").row
    await db.client.hset(record, "origin", "{not json")
    with pytest.raises(fm.CorruptDataError, match="origin"):
        await child.append(message("x", "m1"))
    with pytest.raises(fm.DecodeError, match="origin"):
        await Session.load_context("c")
    await db.client.hset(record, "context_from", "many")
    with pytest.raises(fm.DecodeError, match="context_from"):
        await Session.load("c")
    assert await db.client.llen(db.keys.session("c").entries) == 0  # nothing appended
