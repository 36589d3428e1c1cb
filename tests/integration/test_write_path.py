"""The one write path: owned index entries, the database rule, the retry helper."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pytest

import flue_models as fm
from flue_models import Indexed, Model
from flue_models.connection import open_database
from flue_models.keys import encode_segment
from flue_models.model.codec import EPOCH
from flue_models.model.spec import decode_owned, format_score
from flue_models.model.writes import (
    MAX_ATTEMPTS,
    held,
    plan_check,
    plan_save,
    retry_on_conflict,
    run_writes,
)
from flue_models.schema import MigrationContext, MigrationFile, MigrationLock
from tests.integration.models import Address, Everything, Ticket


def declare_gadget(indexed: bool) -> type[Model]:
    """The same model (one module and qualname) declared with or without an index."""
    if indexed:

        class Gadget(Model):
            class Meta:
                collection = "it_gadget"

            color: Annotated[str, Indexed()]

    else:

        class Gadget(Model):  # type: ignore[no-redef]
            class Meta:
                collection = "it_gadget"

            color: str

    return Gadget


@pytest.fixture
async def other(redis_url: str, protocol: int, key_prefix: str) -> AsyncIterator[fm.Database]:
    """A second database: same server, another prefix, opened while ``db`` is bound."""
    second = await fm.connect(redis_url, key_prefix=f"{key_prefix}-other", protocol=protocol)
    await second.close()  # closing it hands the task back to ``db``...
    reopened = await open_database(redis_url, key_prefix=f"{key_prefix}-other")
    yield reopened  # ...and this one is not bound at all
    keys = [k async for k in reopened.client.scan_iter(match=reopened.keys.pattern())]
    if keys:
        await reopened.client.delete(*keys)
    await reopened.close()


async def test_a_row_records_the_entries_it_owns(db: fm.Database) -> None:
    ticket = await Ticket(id="t-1", status="open", priority=2, email="a@b.c").save()
    key = db.keys.record("it_ticket", "t-1")
    stored = (await db.client.hget(key, "_owned")).decode()
    # Claims, then entries by key, each score once before the entries that share it; keys
    # relative to the row's bucket.
    claim, ordered, *rest = stored.split(" ")
    assert claim == f"!uniq:email={encode_segment('a@b.c')}"
    assert ordered == f"@{format_score(Ticket.__flue_spec__.order_score(ticket._values()))}"
    assert rest == [
        "all",
        f"idx:email:{encode_segment('a@b.c')}",
        f"idx:status:{encode_segment('open')}",
        "@2",
        "rng:priority",
    ]
    entries, unique = decode_owned(db.keys, key, stored.encode())
    assert entries[db.keys.range_index("it_ticket", "priority")] == 2.0
    assert unique == {db.keys.unique("it_ticket", "email"): b"a@b.c"}
    await ticket.update(status="closed")
    owned = (await db.client.hget(key, "_owned")).decode().split(" ")
    assert f"idx:status:{encode_segment('closed')}" in owned
    assert f"idx:status:{encode_segment('open')}" not in owned


async def test_a_row_with_a_few_indexes_is_kept_as_a_listpack(db: fm.Database) -> None:
    """``_owned`` fits Redis's 64-byte listpack value limit for a typical row, so the row
    takes a listpack's memory, not a hash table's (about half)."""
    await Ticket(id="t-2", status="open", priority=2).save()
    key = db.keys.record("it_ticket", "t-2")
    assert len(await db.client.hget(key, "_owned")) <= 64
    assert await db.client.object("encoding", key) == b"listpack"


async def test_removing_an_index_from_the_declaration_orphans_nothing(db: fm.Database) -> None:
    indexed = declare_gadget(indexed=True)
    await indexed(id="g-1", color="red").save()
    index_key = db.keys.index("it_gadget", "color", b"red")
    assert await db.client.zscore(index_key, "g-1") is not None

    plain = declare_gadget(indexed=False)
    gadget = await plain.get("g-1")
    assert gadget is not None
    await gadget.save()  # nothing changed but the declaration: the old entry goes
    assert not await db.client.exists(index_key)
    assert (await fm.verify_collection(plain)).ok
    await gadget.delete()
    assert [
        k async for k in db.client.scan_iter(match=db.keys.collection_pattern("it_gadget"))
    ] == [db.keys.version_counter("it_gadget").encode()]


async def test_a_row_without_its_owned_entries_is_a_decode_error_naming_the_field(
    db: fm.Database,
) -> None:
    await Ticket(id="t-1", status="open", priority=1).save()
    await db.client.hdel(db.keys.record("it_ticket", "t-1"), "_owned")  # not our write
    with pytest.raises(fm.DecodeError, match=r"_owned.*missing"):
        await Ticket.get("t-1")


async def test_a_malformed_owned_field_is_a_decode_error_naming_it(db: fm.Database) -> None:
    await Ticket(id="t-1", status="open", priority=1).save()
    await db.client.hset(db.keys.record("it_ticket", "t-1"), "_owned", "{not json")
    with pytest.raises(fm.DecodeError, match="_owned"):
        await Ticket.get("t-1")


async def test_rebuild_indexes_rewrites_what_rows_own(db: fm.Database) -> None:
    await declare_gadget(indexed=False)(id="g-1", color="red").save()
    indexed = declare_gadget(indexed=True)
    index_key = db.keys.index("it_gadget", "color", b"red")
    assert not await db.client.exists(index_key)
    file = MigrationFile("test", 1, "rebuild", Path(__file__), "", "", module=json)  # any module
    assert await MigrationContext(db, file, MigrationLock(db)).rebuild_indexes(indexed) == 1
    assert await db.client.zscore(index_key, "g-1") is not None
    owned = await db.client.hget(db.keys.record("it_gadget", "g-1"), "_owned")
    assert f"idx:color:{encode_segment('red')}" in owned.decode().split(" ")
    assert (await fm.verify_collection(indexed)).ok


async def test_a_record_stays_with_its_own_database(db: fm.Database, other: fm.Database) -> None:
    await Ticket.using(other).create(id="t-1", status="open", priority=1)
    loaded = await Ticket.using(other).get("t-1")
    assert loaded is not None
    loaded.status = "closed"
    await Ticket.save_many([loaded])  # the ambient database is ``db``: the record goes home
    assert await Ticket.get("t-1") is None
    stored = await Ticket.using(other).get("t-1")
    assert stored is not None
    assert stored.status == "closed"

    loaded.title = "moved?"
    with pytest.raises(fm.ConfigurationError, match="belongs to"):
        await loaded.save(db=db)
    with pytest.raises(fm.ConfigurationError, match="different databases"):
        await Ticket.save_many([loaded, Ticket(status="new", priority=0)])
    assert (await Ticket.using(other).get("t-1")).title == ""  # type: ignore[union-attr]
    assert await Ticket.find().count() == 0

    fresh = Ticket(id="t-2", status="open", priority=1)
    await Ticket.using(other).save(fresh)  # a new record: the argument
    assert await Ticket.using(other).get("t-2") is not None
    await Ticket.save_many([Ticket(id="t-3", status="open", priority=1)])  # else the ambient
    assert await Ticket.get("t-3") is not None


async def test_retry_on_conflict_gives_up_with_the_last_real_conflict() -> None:
    calls = 0

    async def always_beaten() -> None:
        nonlocal calls
        calls += 1
        raise fm.ConflictError.stale("Ticket", "t-1", calls, calls + 1)

    with pytest.raises(fm.ConflictError) as caught:
        await retry_on_conflict(always_beaten)
    assert calls == MAX_ATTEMPTS
    assert caught.value.expected == MAX_ATTEMPTS  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "beaten",
    [fm.ConflictError.stale("Ticket", "t-1", 1, 2), fm.AlreadyExistsError("Ticket", "t-1", 1)],
    ids=["a stale copy", "a record created meanwhile"],
)
async def test_retry_on_conflict_returns_once_a_step_lands(beaten: Exception) -> None:
    outcomes = iter([beaten, "landed"])

    async def step() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await retry_on_conflict(step) == "landed"


async def test_a_version_check_in_a_batch_refuses_it_all_when_its_record_changed(
    db: fm.Database,
) -> None:
    """``plan_check``: a write that holds only while another record is as it was read."""
    await Ticket(id="t-1", status="open", priority=1).save()
    await Ticket(id="t-2", status="open", priority=2).save()
    read = await Ticket.get("t-1")
    other = await Ticket.get("t-2")
    assert read is not None
    assert other is not None
    current = await Ticket.get("t-1")
    assert current is not None
    await current.update(priority=5)  # t-1 changes after `read` was read
    other.status = "closed"
    with pytest.raises(fm.ConflictError):
        await run_writes(db, [plan_save(other, db.keys), plan_check(read, db.keys)])
    assert (await Ticket.get("t-2")).status == "open"  # type: ignore[union-attr]
    fresh = await Ticket.get("t-1")
    assert fresh is not None
    await run_writes(db, [plan_save(other, db.keys), plan_check(fresh, db.keys)])
    assert (await Ticket.get("t-2")).status == "closed"  # type: ignore[union-attr]
    assert (await Ticket.get("t-1")).version == fresh.version  # checked, not written


@pytest.mark.parametrize(
    "refusal",
    [
        fm.UniqueViolationError("Ticket", "email", "a@b", "t-2"),
        fm.errors.GuardError("Ticket", "t-1", "flue::{ticket:0}/deleting:dC0x"),
        fm.StreamClosedError("runs/r-1"),
        fm.SessionForkedError("s-1", "it was not deleted"),
    ],
    ids=["unique", "guard", "closed-stream", "forked"],
)
async def test_retry_on_conflict_raises_other_refusals_at_once(refusal: Exception) -> None:
    """Only "another writer got there first" is worth a fresh read; a refusal a fresh read
    would not change is raised on the first attempt (every one is a ConflictError)."""
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise refusal

    with pytest.raises(type(refusal)):
        await retry_on_conflict(refused)
    assert calls == 1


async def test_a_value_changed_in_place_or_for_an_equal_one_is_written(db: fm.Database) -> None:
    """A save skips encoding a field that still holds the object it was read as or
    written from only when that object cannot have changed: values changed in place,
    and a float equal to the stored one but stored otherwise, are written."""
    address = Address(city="Oslo", lines=["1"])
    record = Everything(tags=["a"], scores={"x": 1.0}, address=address, blob=b"b")
    await record.save(db=db)
    record.tags.append("b")
    record.scores["y"] = 2.0
    record.address.lines.append("2")  # type: ignore[union-attr]
    record.ratio = -0.0  # == 0.0, stored as "-0.0"
    await record.save(db=db)
    read = await Everything.get(record.id, db=db)
    assert read is not None
    assert (read.tags, read.scores, read.address) == (["a", "b"], {"x": 1.0, "y": 2.0}, address)
    assert math.copysign(1.0, read.ratio) == -1.0
    read.tags.append("c")  # the copy a read made: its values were decoded, then changed
    read.text = "same text"
    await read.save(db=db)
    read.text = "".join(["same", " ", "text"])  # an equal str: nothing to write
    await read.save(db=db)
    again = await Everything.get(record.id, db=db)
    assert again is not None
    assert (again.tags, again.text) == (["a", "b", "c"], "same text")
    assert held(again).snapshot == held(read).snapshot


async def test_a_counter_field_holds_what_a_fresh_read_holds(db: fm.Database) -> None:
    """An admission takes its sequence from the script's counter: the state the copy
    keeps (fields, index entries, _owned) is what reading it back gives, so the next
    save of that copy writes only what changes."""
    admitted = await fm.Submission.admit_dispatch("d-1", session_id="s-1", input={}, db=db)
    submission, read = admitted.submission, await fm.Submission.get("d-1", db=db)
    assert submission is not None
    assert read is not None
    assert submission.sequence == read.sequence > 0
    mine, theirs = held(submission), held(read)
    assert (mine.version, mine.snapshot, mine.entries, mine.unique) == (
        theirs.version,
        theirs.snapshot,
        theirs.entries,
        theirs.unique,
    )
    assert plan_save(submission, db.keys).hset == {}


# Clock fields --------------------------------------------------------------------------


class Closing(Model):
    """A datetime field both ordered by and range-indexed, and a plain one."""

    class Meta:
        collection = "it_closing"
        order_by = "closed_at"

    status: Annotated[str, Indexed()]
    closed_at: Annotated[dt.datetime, Indexed(range=True)]
    note: str = ""


@pytest.mark.parametrize("new", [True, False], ids=["create", "update"])
async def test_a_clock_field_takes_the_servers_time_when_the_script_writes(
    db: fm.Database, new: bool
) -> None:
    record = Closing(status="open", closed_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    if not new:
        await record.save()
        record.status = "closed"
    record.closed_at = dt.datetime(1999, 1, 1, tzinfo=dt.UTC)  # any datetime: replaced
    before = await db.server_time()
    await run_writes(db, [plan_save(record, db.keys, clock="closed_at")])
    after = await db.server_time()
    assert before <= record.closed_at <= after
    spec = Closing.__flue_spec__
    key = spec.record_key(db.keys, record.id)
    stored = await db.client.hgetall(key)
    codec = spec.codecs["closed_at"]
    assert stored[b"closed_at"] == codec.encode(record.closed_at)
    # What this copy holds is the row, byte for byte (its _owned too), and the score of
    # every set ordered or ranged by the field is the field's.
    assert {k.decode(): v for k, v in stored.items() if k != b"version"} == held(record).snapshot
    for index_key in held(record).entries:
        if "status" not in index_key:
            assert await db.client.zscore(index_key, record.id) == codec.score(record.closed_at)
    assert (await fm.verify_collection(Closing)).ok
    assert await Closing.get(record.id) == record
    record.note = "next"
    await record.save()  # the copy's version and state are the store's: no conflict


async def test_a_clock_field_must_hold_a_datetime_and_score_nothing_beside_a_counter(
    db: fm.Database,
) -> None:
    record = Closing(status="open", closed_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(fm.ConfigurationError, match="datetime"):
        plan_save(record, db.keys, clock="status")
    with pytest.raises(fm.ConfigurationError, match="follows a counter"):
        plan_save(record, db.keys, counter=(db.keys.absolute("c"), "x"), clock="closed_at")


class Ticked(Model):
    """A counter field that orders the collection, and a clock field beside it."""

    class Meta:
        collection = "it_ticked"
        order_by = "seq"

    status: Annotated[str, Indexed()]
    seq: int = 0
    at: dt.datetime = EPOCH


async def test_a_clock_field_beside_a_counter_takes_the_time_the_counter_reads_as(
    db: fm.Database,
) -> None:
    """An admission's way: the counter's value (the larger of its last + 1 and the
    server's time in µs) and the clock field at that time, written by the script; the
    copy holds the row byte for byte, and the scores are the counter's."""
    counter = db.keys.collection_key("it_ticked", "ticks")
    record = Ticked(id="t-1", status="open")
    before = await db.server_time()
    await run_writes(db, [plan_save(record, db.keys, counter=(counter, "seq"), clock="at")])
    after = await db.server_time()
    assert before <= record.at <= after
    assert record.at == EPOCH + dt.timedelta(microseconds=record.seq)
    assert int(await db.client.get(counter)) == record.seq

    async def stored_as_held(row: Ticked) -> None:
        key = Ticked.__flue_spec__.record_key(db.keys, row.id)
        stored = await db.client.hgetall(key)
        assert {k.decode(): v for k, v in stored.items() if k != b"version"} == held(row).snapshot
        for index_key, score in held(row).entries.items():
            assert score == row.seq
            assert await db.client.zscore(index_key, row.id) == row.seq

    await stored_as_held(record)
    # A counter ahead of the clock: the clock field follows the counter, exactly.
    ahead = (after + dt.timedelta(days=1) - EPOCH) // dt.timedelta(microseconds=1)
    await db.client.set(counter, str(ahead))
    record.status = "closed"
    await run_writes(db, [plan_save(record, db.keys, counter=(counter, "seq"), clock="at")])
    assert record.seq == ahead + 1
    assert record.at == EPOCH + dt.timedelta(microseconds=ahead + 1)
    await stored_as_held(record)
    assert await Ticked.get("t-1") == record
    assert (await fm.verify_collection(Ticked)).ok
