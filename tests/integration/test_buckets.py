"""Collections spread over buckets (``Meta.buckets``): placement, writes, the bucket-count
check, and scatter-gather listings that equal the one-bucket walk of the same data."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flue_models as fm
from flue_models import startup
from flue_models.keys import bucket_of
from flue_models.model import query as query_module
from flue_models.model.buckets import bucket_field, check_collections, stored_buckets
from flue_models.model.expressions import Condition
from flue_models.model.writes import hold
from tests.integration.models import Item, SpreadItem
from tests.integration.test_queries import condition_strategy, items_strategy

SPREAD = SpreadItem.__flue_spec__


def build(model: type[Item] | type[SpreadItem], field: str, op: str, value: Any) -> Condition:
    """The condition of test_queries.build on ``model``."""
    ref: Any = getattr(model, field)
    if op in ("in", "in_many"):
        extra = [f"none-{n}" for n in range(8)] if op == "in_many" else []
        return ref.in_([value, "green", *extra])  # type: ignore[no-any-return]
    symbol = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__"}
    symbol |= {"gt": "__gt__", "ge": "__ge__"}
    return getattr(ref, symbol[op])(value)  # type: ignore[no-any-return]


def spread_copy(item: Item) -> SpreadItem:
    return SpreadItem(id=item.id, **item.model_dump(exclude={"id"}))


async def walk(
    query: fm.Query[Any], page_size: int, between: Callable[[], Awaitable[None]] | None = None
) -> list[str]:
    """Every id ``query`` lists, page by page; ``between``: run after each page."""
    paged: list[str] = []
    cursor = None
    while True:
        page = await query.page(limit=page_size, cursor=cursor)
        assert len(page.items) <= page_size
        paged += [i.id for i in page.items]
        if between is not None:
            await between()
        if page.next_cursor is None:
            return paged
        cursor = page.next_cursor


async def clear(db: fm.Database) -> None:
    keys = [k async for k in db.client.scan_iter(match=db.keys.pattern())]
    keys = [k for k in keys if not k.endswith(b"{meta}")]
    for key in keys:  # one by one: on a cluster the keys are in many slots
        await db.client.delete(key)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=items_strategy,
    conditions=st.lists(condition_strategy, max_size=3),
    sort=st.sampled_from([None, "seq", "-seq", "size", "-size", "-weight"]),
    page_size=st.integers(min_value=1, max_value=9),
    budget=st.sampled_from([None, 6, 12]),
)
async def test_scatter_gather_equals_the_one_bucket_walk(
    db: fm.Database,
    monkeypatch: pytest.MonkeyPatch,
    items: list[Item],
    conditions: list[tuple[str, str, Any]],
    sort: str | None,
    page_size: int,
    budget: int | None,
) -> None:
    """The same records in one bucket and in eight list the same ids in the same order,
    page by page, whatever the page size; a small per-bucket budget (walks that stop
    early, so the merge continues from the frontier) changes nothing."""
    with monkeypatch.context() as patch:
        if budget is not None:
            patch.setattr(query_module, "MIN_BUCKET_BUDGET", budget)
            patch.setattr(query_module, "SCAN_BUDGET", budget)
        await clear(db)
        await Item.save_many(items)
        await SpreadItem.save_many([spread_copy(i) for i in items])

        one = Item.find(*[build(Item, *c) for c in conditions])
        spread = SpreadItem.find(*[build(SpreadItem, *c) for c in conditions])
        if sort:
            one, spread = one.sort_by(sort), spread.sort_by(sort)
        expected = await walk(one, 1000)
        assert await walk(spread, page_size) == expected
        assert [i.id for i in await spread.all()] == expected
        assert await spread.count() == len(expected)


async def test_records_spread_over_the_buckets_by_id(db: fm.Database) -> None:
    records = [
        SpreadItem(id=f"s-{n}", color="red", flag=n % 2 == 0, size=n, seq=n) for n in range(200)
    ]
    await SpreadItem.save_many(records)
    for record in records:
        bucket = bucket_of(record.id, 8)
        keys = db.keys.in_bucket(bucket)
        assert await db.client.exists(keys.record(SPREAD.collection, record.id)) == 1
        assert await db.client.zscore(keys.all(SPREAD.collection), record.id) is not None
    sizes = [await db.client.zcard(db.keys.in_bucket(b).all(SPREAD.collection)) for b in range(8)]
    assert sum(sizes) == 200
    assert all(size > 0 for size in sizes), sizes

    got = await SpreadItem.get_many(["s-3", "s-150", "missing"])
    assert [g.seq if g else None for g in got] == [3, 150, None]
    record = got[0]
    assert record is not None
    before = record.version
    await record.update(color="blue")
    assert record.version > before
    assert await SpreadItem.find(SpreadItem.color == "blue").count() == 1
    assert await SpreadItem.delete_id("s-3")
    assert await SpreadItem.get("s-3") is None
    assert await SpreadItem.find().count() == 199
    report = await fm.verify_collection(SpreadItem)
    assert report.ok, report.drift
    assert report.records == 199


async def test_save_many_is_atomic_per_bucket_and_finishes_the_others(db: fm.Database) -> None:
    first = [SpreadItem(id=f"a-{n}", color="red", flag=True, size=0, seq=n) for n in range(40)]
    await SpreadItem.save_many(first)
    stale = first[0].model_copy()
    hold(stale, version=first[0].version)  # a copy that goes stale below
    await first[0].update(size=5)
    stale.size = 9
    fresh = [SpreadItem(id=f"b-{n}", color="red", flag=True, size=0, seq=n) for n in range(40)]
    with pytest.raises(fm.ConflictError):
        await SpreadItem.save_many([stale, *fresh])
    failed_bucket = bucket_of(stale.id, 8)
    written = await SpreadItem.get_many([r.id for r in fresh])
    for record, found in zip(fresh, written, strict=True):
        if bucket_of(record.id, 8) == failed_bucket:
            assert found is None  # its bucket's call wrote nothing
        else:
            assert found is not None  # the other buckets' calls finished
    assert {bucket_of(r.id, 8) for r in fresh} - {failed_bucket}  # both kinds were seen
    assert (await SpreadItem.get(stale.id)).size == 5  # type: ignore[union-attr]


async def test_one_atomic_write_refuses_records_of_two_buckets(db: fm.Database) -> None:
    from flue_models.model.writes import plan_save, run_writes

    a, b = SpreadItem(id="s-1", color="r", flag=True, size=0), None
    for n in range(2, 50):
        if bucket_of(f"s-{n}", 8) != bucket_of("s-1", 8):
            b = SpreadItem(id=f"s-{n}", color="r", flag=True, size=0)
            break
    assert b is not None
    with pytest.raises(fm.ConfigurationError, match="one bucket"):
        await run_writes(db, [plan_save(a, db.keys), plan_save(b, db.keys)])
    assert await SpreadItem.get_many(["s-1", b.id]) == [None, None]


async def test_the_store_records_the_bucket_count_at_first_use(db: fm.Database) -> None:
    await SpreadItem(color="red", flag=True, size=1).save()
    assert (await stored_buckets(db))[SPREAD.collection] == 8
    assert (await stored_buckets(db)).get(Item.__flue_spec__.collection) is None  # one: absent


async def test_another_declared_count_is_refused_before_anything_is_read(
    db: fm.Database, redis_url: str, key_prefix: str
) -> None:
    await SpreadItem(id="kept", color="red", flag=True, size=1).save()
    fewer = dataclasses.replace(SPREAD, buckets=4)
    fresh = await fm.connect(redis_url, key_prefix=key_prefix)
    try:
        fresh.checked_buckets.clear()
        with pytest.raises(
            fm.errors.SchemaLayoutError, match="cluster split it_spread_item --buckets 4"
        ):
            await check_collections(fresh, [fewer])
        assert SPREAD.collection not in fresh.checked_buckets
    finally:
        await fresh.close()

    # A one-bucket model over a collection the store keeps in 8 is refused by connect().
    await db.client.hset(db.keys.meta, bucket_field(Item.__flue_spec__.collection), "8")
    with pytest.raises(fm.errors.SchemaLayoutError) as caught:
        await fm.connect(redis_url, key_prefix=key_prefix)
    assert (caught.value.stored, caught.value.declared) == (8, 1)
    await db.client.hdel(db.keys.meta, bucket_field(Item.__flue_spec__.collection))


async def test_a_count_recorded_between_connects_schema_read_and_bucket_check_is_seen(
    redis_url: str, protocol: int, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect() reads the schema record once, for its schema check and its bucket check.
    Another client that records a collection's bucket count between that read and the
    check (a model declaring 4 buckets where ours declares 8) is not overwritten, nor
    missed: the check's first use records with HSETNX and reads the count back."""
    async with fm.connect(redis_url, key_prefix=key_prefix, protocol=protocol) as db:
        await db.client.hdel(db.keys.meta, bucket_field(SPREAD.collection))  # never recorded
    check = startup.check_collections

    async def paused(db: fm.Database, specs: Any, *, record: Any = None) -> None:
        assert record is not None  # the record connect() read for its schema check
        assert bucket_field(SPREAD.collection) not in record
        await db.client.hset(db.keys.meta, bucket_field(SPREAD.collection), "4")
        await check(db, specs, record=record)

    monkeypatch.setattr(startup, "check_collections", paused)
    with pytest.raises(fm.errors.SchemaLayoutError) as caught:
        await fm.connect(redis_url, key_prefix=key_prefix, protocol=protocol)
    assert (caught.value.stored, caught.value.declared) == (4, 8)
    monkeypatch.undo()
    plain = await fm.connect(redis_url, key_prefix=key_prefix, check_schema=False, migrate=False)
    try:
        assert (await stored_buckets(plain))[SPREAD.collection] == 4  # the other's, kept
    finally:
        await plain.close()


async def test_records_written_in_one_bucket_refuse_a_model_that_declares_more(
    db: fm.Database,
) -> None:
    one = dataclasses.replace(SPREAD, collection=Item.__flue_spec__.collection)
    await Item(color="red", flag=True, size=1).save()
    db.checked_buckets.clear()
    with pytest.raises(fm.errors.SchemaLayoutError) as caught:
        await check_collections(db, [one])
    assert (caught.value.stored, caught.value.declared) == (1, 8)
    assert bucket_field(one.collection) not in await stored_buckets(db)


async def test_a_corrupt_stored_count_is_refused(db: fm.Database) -> None:
    await db.client.hset(db.keys.meta, bucket_field(SPREAD.collection), "eight")
    db.checked_buckets.clear()
    with pytest.raises(fm.errors.ForeignSchemaError):
        await SpreadItem.find().count()
    with pytest.raises(fm.errors.ForeignSchemaError):
        await SpreadItem(color="red", flag=True, size=1).save()
    await db.client.hdel(db.keys.meta, bucket_field(SPREAD.collection))


async def test_explain_and_count_cover_every_bucket(db: fm.Database) -> None:
    await SpreadItem.save_many(
        [
            SpreadItem(color="blue" if n < 30 else "red", flag=True, size=n, seq=n)
            for n in range(100)
        ]
    )
    assert await SpreadItem.find(SpreadItem.color == "blue").count() == 30
    assert await SpreadItem.find(SpreadItem.size >= 90).count() == 10
    assert await SpreadItem.find(SpreadItem.color == "blue", SpreadItem.size >= 20).count() == 10
    plan = await SpreadItem.find(SpreadItem.color == "blue").explain()
    assert "(30 entries" in plan
    assert "in each of 8 buckets" in plan


@pytest.mark.standalone  # the hand edit renames a key into another slot
async def test_verify_reports_a_misplaced_record_and_repair_leaves_it(db: fm.Database) -> None:
    record = await SpreadItem(id="moved", color="red", flag=True, size=1).save()
    home = bucket_of("moved", 8)
    away = (home + 1) % 8
    await db.client.rename(
        db.keys.in_bucket(home).record(SPREAD.collection, "moved"),
        db.keys.in_bucket(away).record(SPREAD.collection, "moved"),
    )
    report = await fm.verify_collection(SpreadItem)
    assert "misplaced" in {d.kind for d in report.drift}, report.drift
    assert await SpreadItem.get(record.id) is None  # reads by id look in its home bucket
    await fm.repair_collection(SpreadItem, report)
    after = await fm.verify_collection(SpreadItem)
    assert [d.kind for d in after.drift] == ["misplaced"]  # its entries are its own: kept
    away_key = db.keys.in_bucket(away).record(SPREAD.collection, "moved")
    assert await db.client.exists(away_key) == 1  # the row itself is never touched


async def test_pages_list_every_record_that_stays_once_while_others_come_and_go(
    db: fm.Database,
) -> None:
    """Keyset pages over eight buckets while writers create and delete other records:
    each record present throughout is listed exactly once, in order."""
    stay = [
        SpreadItem(id=f"keep-{n}", color="red", flag=True, size=0, seq=n % 40) for n in range(300)
    ]
    await SpreadItem.save_many(stay)
    stop = asyncio.Event()

    async def churn(w: int) -> int:
        n = 0
        while not stop.is_set():
            extra = await SpreadItem(
                id=f"tmp-{w}-{n}", color="red", flag=True, size=0, seq=n % 40
            ).save()
            if n % 2:
                await extra.delete()
            n += 1
        return n

    writers = [asyncio.create_task(churn(w)) for w in range(3)]
    listed: list[str] = []
    try:
        cursor = None
        query = SpreadItem.find(SpreadItem.color == "red").sort_by("-seq")
        while True:
            page = await query.id_page(limit=17, cursor=cursor)
            listed += page.ids
            await asyncio.sleep(0)  # let the writers in between pages
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    finally:
        stop.set()
        written = await asyncio.gather(*writers)
    assert sum(written) > 0  # the writers wrote while the pages were read
    kept = [i for i in listed if i.startswith("keep-")]
    assert sorted(kept) == sorted(r.id for r in stay)  # each exactly once
    assert len(listed) == len(set(listed))
    order = {r.id: r.seq for r in stay}
    seqs = [order[i] for i in kept]
    assert seqs == sorted(seqs, reverse=True)
