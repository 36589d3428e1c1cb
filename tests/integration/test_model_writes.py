"""Saving, updating, creating, deleting and reading records on a real server."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import PrivateAttr

import flue_models as fm
from flue_models.connection import current_database
from flue_models.keys import encode_segment
from tests.integration.models import Address, Everything, Item, Mood, Ticket
from tests.integration.roundtrips import count_round_trips


async def test_save_writes_the_hash_and_every_index_in_the_documented_layout(
    db: fm.Database,
) -> None:
    ticket = await Ticket(id="t-1", status="open", priority=2, owner="ann").save()
    assert ticket.version == 1
    p = db.keys.prefix
    record_key = f"{p}::{{it_ticket:0}}:{encode_segment('t-1')}"
    stored = await db.client.hgetall(record_key)
    assert stored[b"status"] == b"open"
    assert stored[b"priority"] == b"2"
    assert stored[b"version"] == b"1"
    assert b"email" not in stored  # None is never stored
    score = await db.client.zscore(f"{p}::{{it_ticket:0}}:all", "t-1")
    since_epoch = ticket.created_at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    micros = (since_epoch.days * 86400 + since_epoch.seconds) * 10**6 + since_epoch.microseconds
    assert score == micros / 1000  # epoch milliseconds, microseconds as the fraction
    assert (
        await db.client.zscore(f"{p}::{{it_ticket:0}}:idx:status:{encode_segment('open')}", "t-1")
        == score
    )
    assert await db.client.zscore(f"{p}::{{it_ticket:0}}:rng:priority", "t-1") == 2.0
    assert (
        await db.client.zscore(f"{p}::{{it_ticket:0}}:idx:owner:{encode_segment('ann')}", "t-1")
        == score
    )


async def test_get_returns_an_equal_record_or_none(db: fm.Database) -> None:
    saved = await Ticket(status="open", priority=1, title="hello").save()
    loaded = await Ticket.get(saved.id)
    assert loaded == saved
    assert loaded is not None
    assert loaded.version == 1
    assert await Ticket.get("missing") is None


class Noted(fm.Model):
    """A model with private attributes of its own, beside the state the library keeps."""

    class Meta:
        collection = "it_noted"

    status: Annotated[str, fm.Indexed()]
    _note: str = PrivateAttr(default="")
    _seen: list[str] = PrivateAttr(default_factory=list)


async def test_a_model_with_private_attributes_keeps_them_and_its_version(
    db: fm.Database,
) -> None:
    assert fm.Model.__private_attributes__ == {}  # the library declares none of its own
    record = Noted(id="n-1", status="open")
    record._note = "mine"
    await record.save()
    assert (record._note, record._seen, record.version) == ("mine", [], 1)
    loaded = await Noted.get("n-1")
    assert loaded is not None
    assert (loaded._note, loaded.version) == ("", 1)  # private values are not stored
    await loaded.update(status="closed")
    assert loaded.version == 2
    with pytest.raises(fm.ConflictError):
        await record.update(status="closed")  # its copy is still at version 1
    assert record._note == "mine"
    copy = record.model_copy()
    assert (copy.version, copy._note) == (1, "mine")


async def test_update_moves_index_entries_exactly(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1).save()
    await ticket.update(status="closed", priority=5)
    assert ticket.version == 2
    assert await Ticket.find(Ticket.status == "open").count() == 0
    assert [t.id for t in await Ticket.find(Ticket.status == "closed").all()] == [ticket.id]
    assert await Ticket.find(Ticket.priority >= 5).count() == 1
    assert (await fm.verify_collection(Ticket)).ok


async def test_update_writes_only_the_changed_fields(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1, title="first").save()
    key = db.keys.record("it_ticket", ticket.id)
    await db.client.hset(key, "title", "changed by hand")  # not a field the update touches
    await ticket.update(priority=3)
    assert (await db.client.hget(key, "title")) == b"changed by hand"
    assert (await db.client.hget(key, "priority")) == b"3"


async def test_setting_none_removes_the_field_and_its_index_entry(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1, owner="ann").save()
    await ticket.update(owner=None)
    key = db.keys.record("it_ticket", ticket.id)
    assert not await db.client.hexists(key, "owner")
    owner_set = db.keys.absolute(f"it_ticket:idx:owner:{encode_segment('ann')}")
    assert await db.client.zscore(owner_set, ticket.id) is None
    reloaded = await Ticket.get(ticket.id)
    assert reloaded is not None
    assert reloaded.owner is None


async def test_a_stale_copy_raises_a_conflict_naming_both_versions(db: fm.Database) -> None:
    first = await Ticket(id="t-stale", status="open", priority=1).save()
    second = await Ticket.get("t-stale")
    assert second is not None
    await second.update(status="closed")
    first.status = "pending"
    with pytest.raises(fm.ConflictError, match=r"'t-stale'.*version 1.*version 2") as caught:
        await first.save()
    assert (caught.value.expected, caught.value.found) == (1, 2)
    stored = await Ticket.get("t-stale")
    assert stored is not None
    assert stored.status == "closed"  # the stale write changed nothing
    assert (await fm.verify_collection(Ticket)).ok


async def test_a_failed_update_leaves_the_copy_as_it_was(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1).save()
    other = await Ticket.get(ticket.id)
    assert other is not None
    await other.update(priority=2)
    with pytest.raises(fm.ConflictError):
        await ticket.update(status="closed")
    assert ticket.status == "open"


async def test_create_refuses_an_existing_id(db: fm.Database) -> None:
    await Ticket.create(id="t-dup", status="open", priority=1)
    with pytest.raises(fm.AlreadyExistsError, match="already exists"):
        await Ticket.create(id="t-dup", status="closed", priority=2)
    with pytest.raises(fm.AlreadyExistsError):
        await Ticket(id="t-dup", status="closed", priority=2).save()
    stored = await Ticket.get("t-dup")
    assert stored is not None
    assert stored.status == "open"


async def test_unique_values_are_refused_atomically(db: fm.Database) -> None:
    await Ticket.create(id="a", status="open", priority=1, email="x@example.com")
    with pytest.raises(fm.UniqueViolationError, match=r"x@example\.com.*'a'"):
        await Ticket.create(id="b", status="open", priority=1, email="x@example.com")
    assert await Ticket.get("b") is None  # nothing of b was written
    holder = await Ticket.get("a")
    assert holder is not None
    await holder.update(email="y@example.com")  # releases x
    await Ticket.create(id="b", status="open", priority=1, email="x@example.com")
    assert (await fm.verify_collection(Ticket)).ok


async def test_unique_values_in_one_batch_are_refused(db: fm.Database) -> None:
    with pytest.raises(fm.UniqueViolationError):
        await Ticket.save_many(
            [
                Ticket(status="open", priority=1, email="same@example.com"),
                Ticket(status="open", priority=1, email="same@example.com"),
            ]
        )
    assert await Ticket.find().count() == 0


async def test_delete_removes_the_row_and_every_index_entry(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1, owner="bo", email="d@example.com").save()
    assert await ticket.delete() is True
    assert await Ticket.get(ticket.id) is None
    assert await Ticket.find().count() == 0
    assert await db.client.hlen(db.keys.unique("it_ticket", "email")) == 0
    pattern = db.keys.collection_pattern("it_ticket")
    leftovers = [k async for k in db.client.scan_iter(match=pattern)]
    assert leftovers == [db.keys.version_counter("it_ticket").encode()]  # versions go on
    assert await ticket.delete() is False  # already gone


async def test_delete_by_id(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1).save()
    assert await Ticket.delete_id(ticket.id) is True
    assert await Ticket.delete_id(ticket.id) is False
    assert (await fm.verify_collection(Ticket)).ok


async def test_deleting_from_a_stale_copy_is_a_conflict(db: fm.Database) -> None:
    ticket = await Ticket(status="open", priority=1).save()
    other = await Ticket.get(ticket.id)
    assert other is not None
    await other.update(status="closed")
    with pytest.raises(fm.ConflictError):
        await ticket.delete()
    assert await Ticket.get(ticket.id) is not None


async def test_get_many_keeps_order_and_marks_missing(db: fm.Database) -> None:
    a = await Ticket(status="open", priority=1).save()
    b = await Ticket(status="open", priority=2).save()
    found = await Ticket.get_many([b.id, "nope", a.id])
    assert [t.id if t else None for t in found] == [b.id, None, a.id]


async def test_reads_and_batches_take_one_round_trip(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tickets = [Ticket(status="open", priority=i) for i in range(50)]
    await Ticket.get(tickets[0].id)  # warm the connection
    await Ticket.save_many(tickets[:1])  # and load the script
    with count_round_trips(db, monkeypatch) as trips:
        await Ticket.save_many(tickets[1:])
        assert trips[0] == 1
        await Ticket.get(tickets[3].id)
        assert trips[0] == 2
        await Ticket.get_many([t.id for t in tickets])
        assert trips[0] == 3
        tickets[5].status = "closed"
        await tickets[5].save()
        assert trips[0] == 4


async def test_a_hand_edited_hash_raises_a_decode_error_naming_key_and_field(
    db: fm.Database,
) -> None:
    ticket = await Ticket(status="open", priority=1).save()
    key = db.keys.record("it_ticket", ticket.id)
    await db.client.hset(key, "priority", "lots")
    with pytest.raises(fm.DecodeError, match=rf"{key}.*'priority'"):
        await Ticket.get(ticket.id)
    await db.client.hdel(key, "version")
    with pytest.raises(fm.DecodeError, match="'version'"):
        await Ticket.get(ticket.id)


async def test_every_field_type_round_trips_through_the_hash(db: fm.Database) -> None:
    value = Everything(
        text="héllo\nworld",
        number=-(2**70),
        ratio=0.1 + 0.2,
        flag=True,
        money=Decimal("12.3400"),
        moment=dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        day=dt.date(1999, 12, 31),
        ident=uuid.uuid4(),
        mood=Mood.LOUD,
        blob=bytes(range(256)),
        kind="b",
        maybe=None,
        tags=["b", "a"],
        scores={"z": 1.5, "a": -2.0},
        address=Address(city="Oslo", lines=["1", "2"]),
    )
    await value.save()
    loaded = await Everything.get(value.id)
    assert loaded == value
    assert loaded is not None
    assert loaded.money.as_tuple() == Decimal("12.3400").as_tuple()
    raw = await db.client.hget(db.keys.record("it_everything", value.id), "scores")
    assert raw == b'{"a":-2.0,"z":1.5}'


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(),
    number=st.integers(),
    ratio=st.floats(allow_nan=False),
    money=st.decimals(allow_nan=False, allow_infinity=False),
    blob=st.binary(),
    tags=st.lists(st.text(max_size=5), max_size=4),
)
async def test_generated_values_round_trip_through_the_hash(
    db: fm.Database,
    text: str,
    number: int,
    ratio: float,
    money: Decimal,
    blob: bytes,
    tags: list[str],
) -> None:
    value = Everything(text=text, number=number, ratio=ratio, money=money, blob=blob, tags=tags)
    await value.save()
    assert await Everything.get(value.id) == value


async def test_naive_datetimes_are_refused_before_anything_is_written(db: fm.Database) -> None:
    with pytest.raises(fm.EncodingError, match="naive"):
        await Everything(moment=dt.datetime(2026, 1, 1)).save()
    pattern = db.keys.absolute("it_everything:*")
    assert [k async for k in db.client.scan_iter(match=pattern)] == []


async def test_batch_save_is_all_or_nothing(db: fm.Database) -> None:
    taken = await Item(color="red", flag=True, size=1).save()
    with pytest.raises(fm.AlreadyExistsError):
        await Item.save_many(
            [
                Item(color="blue", flag=False, size=2),
                Item(id=taken.id, color="x", flag=False, size=3),
            ]
        )
    assert await Item.find().count() == 1


async def test_two_prefixes_never_see_each_other(redis_url: str, protocol: int) -> None:
    first_prefix, second_prefix = f"iso-a-{uuid.uuid4().hex[:6]}", f"iso-b-{uuid.uuid4().hex[:6]}"
    second = await fm.connect(redis_url, key_prefix=second_prefix, protocol=protocol)
    async with fm.connect(redis_url, key_prefix=first_prefix, protocol=protocol) as first:
        try:
            await Ticket.create(id="shared-id", status="open", priority=1)
            await Ticket.using(second).create(id="shared-id", status="closed", priority=9)
            mine = await Ticket.get("shared-id")
            theirs = await Ticket.using(second).get("shared-id")
            assert mine is not None
            assert theirs is not None
            assert (mine.status, theirs.status) == ("open", "closed")
            assert [t.status for t in await Ticket.find().all()] == ["open"]
            assert [t.status for t in await Ticket.using(second).find().all()] == ["closed"]
            theirs.priority = 8
            await theirs.save()  # a record loaded through using() saves back there
            assert (await Ticket.using(second).get("shared-id")).priority == 8  # type: ignore[union-attr]
            assert (await Ticket.get("shared-id")).priority == 1  # type: ignore[union-attr]
        finally:
            for database in (first, second):
                keys = [k async for k in database.client.scan_iter(match=database.keys.pattern())]
                if keys:
                    await database.client.delete(*keys)
            await second.close()


async def test_models_without_a_connection_say_how_to_connect() -> None:
    with pytest.raises(fm.ConfigurationError, match="connect"):
        await Ticket.get("x")


async def test_closing_an_inner_database_rebinds_the_outer_one(
    redis_url: str, key_prefix: str
) -> None:
    async with fm.connect(redis_url, key_prefix=key_prefix) as outer:
        async with fm.connect(redis_url, key_prefix=key_prefix + "-inner") as inner:
            assert current_database() is inner
        assert current_database() is outer


async def test_a_copy_of_a_deleted_record_cannot_overwrite_its_successor(db: fm.Database) -> None:
    old = await Ticket.create(id="t-aba", status="open", priority=1)
    keeper = await Ticket.get("t-aba")
    assert keeper is not None
    await old.delete()
    reborn = await Ticket.create(id="t-aba", status="closed", priority=7)
    assert reborn.version != keeper.version  # versions are never reused
    keeper.title = "from the old record"
    with pytest.raises(fm.ConflictError):
        await keeper.save()
    stored = await Ticket.get("t-aba")
    assert stored is not None
    assert (stored.status, stored.title) == ("closed", "")


async def test_verification_reports_every_kind_of_drift(db: fm.Database) -> None:
    ticket = await Ticket(id="t-v", status="open", priority=3, email="v@example.com").save()
    assert (await fm.verify_collection(Ticket)).ok
    open_set = db.keys.index("it_ticket", "status", b"open")
    await db.client.zrem(open_set, "t-v")  # row missing from an index
    await db.client.zadd(db.keys.index("it_ticket", "status", b"closed"), {"t-v": 1.0})  # stale
    await db.client.zadd(open_set, {"ghost": 1.0})  # entry without a row
    await db.client.zadd(db.keys.range_index("it_ticket", "priority"), {"t-v": 4.0})  # wrong
    await db.client.hdel(db.keys.unique("it_ticket", "email"), "v@example.com")
    report = await fm.verify_collection(Ticket)
    kinds = sorted((d.kind, d.record_id) for d in report.drift)
    assert kinds == [
        ("missing", "t-v"),
        ("missing", "t-v"),
        ("orphan", "ghost"),
        ("stale", "t-v"),
        ("wrong_score", "t-v"),
    ]
    assert ticket.version == 1


async def test_a_create_retried_with_the_same_values_returns_the_stored_record(
    db: fm.Database,
) -> None:
    first = await Ticket.create(id="t-1", status="open", priority=1)
    again = await Ticket.create(id="t-1", status="open", priority=1, created_at=first.created_at)
    assert again == first
    assert again.version == first.version  # nothing was written
    with pytest.raises(fm.AlreadyExistsError):
        await Ticket.create(id="t-1", status="closed", priority=1, created_at=first.created_at)
