"""Collections placed by another field than the id (``Meta.partition_by``): placement,
reads by id with and without the partition, one-bucket queries when the partition is
fixed, the ids across partitions, the layout check, and listings that equal the
one-bucket walk of the same data."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flue_models as fm
from flue_models.keys import bucket_of
from flue_models.model import query as query_module
from flue_models.model.buckets import check_collections, partition_field
from tests.integration.models import Account, FlatTenantItem, TenantItem
from tests.integration.test_buckets import clear, walk
from tests.integration.test_queries import COLORS, condition_strategy

SPEC = TenantItem.__flue_spec__
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]

tenant_items = st.lists(
    st.builds(
        TenantItem,
        tenant=st.sampled_from(TENANTS),
        color=st.sampled_from(COLORS),
        flag=st.booleans(),
        size=st.integers(min_value=-3, max_value=3),
        weight=st.none() | st.sampled_from([-1.5, 0.0, 0.5, 2.0]),
        seq=st.integers(min_value=0, max_value=6),
    ),
    max_size=25,
)
tenant_conditions = st.one_of(
    condition_strategy,
    st.tuples(st.just("tenant"), st.sampled_from(["eq", "in", "ne"]), st.sampled_from(TENANTS)),
)


def build(model: type[TenantItem] | type[FlatTenantItem], field: str, op: str, value: Any) -> Any:
    """A condition on ``model`` (``in``: the value and one more; ``in_many``: nine more)."""
    ref: Any = getattr(model, field)
    if op in ("in", "in_many"):
        other = "acme" if field == "tenant" else "green"
        extra = [f"none-{n}" for n in range(8)] if op == "in_many" else []
        return ref.in_([value, other, *extra])
    symbol = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__"}
    symbol |= {"gt": "__gt__", "ge": "__ge__"}
    return getattr(ref, symbol[op])(value)


def buckets_of(*tenants: str) -> set[int]:
    return {bucket_of(t, SPEC.buckets) for t in tenants}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=tenant_items,
    conditions=st.lists(tenant_conditions, max_size=3),
    sort=st.sampled_from([None, "seq", "-seq", "size", "-size", "-weight"]),
    page_size=st.integers(min_value=1, max_value=9),
)
async def test_partitioned_listings_equal_the_one_bucket_walk(
    db: fm.Database,
    items: list[TenantItem],
    conditions: list[tuple[str, str, Any]],
    sort: str | None,
    page_size: int,
) -> None:
    """The same records in one bucket and placed by tenant in eight list the same ids in
    the same order, page by page, with the tenant fixed, ranged over or left free."""
    await clear(db)
    await TenantItem.save_many(items)
    await FlatTenantItem.save_many([FlatTenantItem(**i.model_dump()) for i in items])
    one = FlatTenantItem.find(*[build(FlatTenantItem, *c) for c in conditions])
    spread = TenantItem.find(*[build(TenantItem, *c) for c in conditions])
    if sort:
        one, spread = one.sort_by(sort), spread.sort_by(sort)
    expected = await walk(one, 1000)
    assert await walk(spread, page_size) == expected
    assert [i.id for i in await spread.all()] == expected
    assert await spread.count() == len(expected)


async def test_records_are_placed_by_their_partition_value(db: fm.Database) -> None:
    records = [
        TenantItem(id=f"t-{n}", tenant=TENANTS[n % 5], color="red", flag=True, size=n, seq=n)
        for n in range(50)
    ]
    await TenantItem.save_many(records)
    for record in records:
        keys = db.keys.in_bucket(bucket_of(record.tenant, 8))
        assert await db.client.exists(keys.record(SPEC.collection, record.id)) == 1
        assert await db.client.zscore(keys.all(SPEC.collection), record.id) is not None
        tenant_set = SPEC.equality_key(keys, "tenant", record.tenant)
        assert await db.client.zscore(tenant_set, record.id) is not None
    held = [await db.client.zcard(db.keys.in_bucket(b).all(SPEC.collection)) for b in range(8)]
    assert sum(held) == 50
    assert sum(1 for size in held if size) == len(buckets_of(*TENANTS))

    # By id alone every bucket is asked; with the partition, its bucket alone.
    got = await TenantItem.get_many(["t-3", "t-40", "missing"])
    assert [(g.tenant, g.seq) if g else None for g in got] == [
        ("umbrella", 3),
        ("acme", 40),
        None,
    ]
    assert got[0] is not None
    read = await TenantItem.get("t-3", partition="umbrella")
    assert read is not None
    assert (read.model_dump(), read.version) == (got[0].model_dump(), got[0].version)
    assert await TenantItem.get("t-3", partition="acme") is None
    assert await TenantItem.get("missing", partition="acme") is None

    record = got[1]
    assert record is not None
    await record.update(color="blue", size=-1)
    assert await TenantItem.find(TenantItem.color == "blue").count() == 1
    assert await record.delete()
    assert await TenantItem.get("t-40") is None
    assert await TenantItem.delete_id("t-3")
    assert await TenantItem.find().count() == 48
    report = await fm.verify_collection(TenantItem)
    assert report.ok, report.drift
    assert report.records == 48


async def test_a_query_that_fixes_the_partition_reads_its_buckets_alone(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await TenantItem.save_many(
        [
            TenantItem(tenant=TENANTS[n % 5], color="red", flag=n % 2 == 0, size=n, seq=n)
            for n in range(100)
        ]
    )
    touched: list[set[int]] = []
    real = query_module._run_query

    async def recording(db: fm.Database, plan: Any, *args: Any, **options: Any) -> Any:
        touched[-1].update(db.keys.bucket_in_key(SPEC.collection, k) for k in plan.drivers)
        return await real(db, plan, *args, **options)

    monkeypatch.setattr(query_module, "_run_query", recording)

    async def buckets_read(query: fm.Query[TenantItem]) -> set[int]:
        touched.append(set())
        await query.all()
        return touched[-1]

    acme = TenantItem.find(TenantItem.tenant == "acme", TenantItem.flag == True)  # noqa: E712
    assert await buckets_read(acme) == buckets_of("acme")
    assert {i.tenant for i in await acme.all()} == {"acme"}
    assert len(await acme.all()) == 10
    two = TenantItem.find(TenantItem.tenant.in_(["acme", "hooli"]))
    assert await buckets_read(two) == buckets_of("acme", "hooli")
    assert len(await two.all()) == 40
    assert await buckets_read(TenantItem.find(TenantItem.tenant != "acme")) == set(range(8))
    assert await buckets_read(TenantItem.find(TenantItem.size >= 0)) == set(range(8))
    # Two conditions on the tenant that no record meets both of: still one bucket, none.
    never = TenantItem.find(TenantItem.tenant == "acme", TenantItem.tenant == "hooli")
    assert len(await buckets_read(never)) == 1
    assert await never.all() == []
    plan = await TenantItem.find(TenantItem.tenant == "acme").explain()
    assert "buckets at once" not in plan
    assert "in each of 8 buckets" in await TenantItem.find().explain()


async def test_the_partition_of_a_stored_record_never_changes(db: fm.Database) -> None:
    record = await TenantItem(id="fixed", tenant="acme", color="red", flag=True, size=1).save()
    version = record.version
    with pytest.raises(fm.ConfigurationError, match="'tenant' places the record"):
        await record.update(tenant="globex", color="blue")
    assert (record.tenant, record.color) == ("acme", "red")  # the copy as it was
    stored = await TenantItem.get("fixed")
    assert stored is not None
    assert (stored.tenant, stored.color, stored.version) == ("acme", "red", version)
    assert await TenantItem.find(TenantItem.tenant == "globex").count() == 0

    record.tenant = "globex"
    with pytest.raises(fm.ConfigurationError):
        await TenantItem.save_many([record])
    assert await TenantItem.get("fixed", partition="globex") is None


async def test_an_id_names_one_record_across_partitions(db: fm.Database) -> None:
    await TenantItem.create(id="shared", tenant="acme", color="red", flag=True, size=1)
    with pytest.raises(fm.AlreadyExistsError, match="tenant = 'acme'") as caught:
        await TenantItem.create(id="shared", tenant="globex", color="red", flag=True, size=1)
    assert caught.value.partition == "acme"
    assert await TenantItem.get("shared", partition="globex") is None
    assert await TenantItem.find(TenantItem.tenant == "globex").count() == 0
    with pytest.raises(fm.AlreadyExistsError):
        await TenantItem.save_many(
            [
                TenantItem(id="fresh", tenant="globex", color="red", flag=True, size=1),
                TenantItem(id="shared", tenant="globex", color="red", flag=True, size=1),
            ]
        )
    assert await TenantItem.get("fresh") is None  # nothing of the batch was written

    # The same id in the same partition: the usual refusal, and a retried create.
    with pytest.raises(fm.AlreadyExistsError) as same:
        await TenantItem.create(id="shared", tenant="acme", color="blue", flag=True, size=1)
    assert same.value.partition == ""  # its own partition holds it
    again = await TenantItem.create(id="shared", tenant="acme", color="red", flag=True, size=1)
    assert again.tenant == "acme"

    # Once deleted, the id is free in any partition.
    assert await TenantItem.delete_id("shared")
    moved = await TenantItem.create(id="shared", tenant="globex", color="red", flag=True, size=1)
    read = await TenantItem.get("shared")
    assert read is not None
    assert (read.tenant, read.version) == (moved.tenant, moved.version)


@pytest.mark.standalone  # the hand edit copies a row into another slot
async def test_an_id_held_in_two_partitions_is_reported_not_guessed(db: fm.Database) -> None:
    """Two creates racing in two partitions can both land; a read by id alone then names
    both rows instead of returning either, and a read with the partition still works."""
    await TenantItem.create(id="twice", tenant="acme", color="red", flag=True, size=1)
    home = db.keys.in_bucket(bucket_of("acme", 8)).record(SPEC.collection, "twice")
    other = next(t for t in TENANTS if bucket_of(t, 8) != bucket_of("acme", 8))
    away = db.keys.in_bucket(bucket_of(other, 8)).record(SPEC.collection, "twice")
    await db.client.copy(home, away)
    await db.client.hset(away, "tenant", other)
    with pytest.raises(fm.CorruptDataError) as caught:
        await TenantItem.get("twice")
    assert home in str(caught.value)
    assert away in str(caught.value)
    with pytest.raises(fm.CorruptDataError):
        await TenantItem.get_many(["missing", "twice"])
    found = await TenantItem.get("twice", partition="acme")
    assert found is not None
    assert found.tenant == "acme"
    found = await TenantItem.get("twice", partition=other)
    assert found is not None
    assert found.tenant == other


async def test_the_store_records_the_partition_field_and_refuses_another(
    db: fm.Database, redis_url: str, key_prefix: str
) -> None:
    await TenantItem(tenant="acme", color="red", flag=True, size=1).save()
    assert await db.client.hget(db.keys.meta, partition_field(SPEC.collection)) == b"tenant"
    by_id = dataclasses.replace(SPEC, partition_by="id")
    fresh = await fm.connect(redis_url, key_prefix=key_prefix)
    try:
        fresh.checked_buckets.clear()
        with pytest.raises(fm.errors.SchemaLayoutError, match="--partition-by id") as caught:
            await check_collections(fresh, [by_id])
        assert (caught.value.stored, caught.value.declared) == ("tenant", "id")
        assert SPEC.collection not in fresh.checked_buckets
    finally:
        await fresh.close()

    # A collection placed by id refuses a model that places it by a field.
    spread = dataclasses.replace(SPEC, collection="it_spread_item", partition_by="tenant")
    await db.client.hset(db.keys.meta, "buckets:it_spread_item", "8")
    db.checked_buckets.clear()
    with pytest.raises(fm.errors.SchemaLayoutError) as refused:
        await check_collections(db, [spread])
    assert (refused.value.stored, refused.value.declared) == ("id", "tenant")


async def test_a_unique_partition_field_is_claimed_in_its_bucket(db: fm.Database) -> None:
    first = await Account.create(tenant="acme")
    with pytest.raises(fm.UniqueViolationError):
        await Account.create(tenant="acme", plan="pro")
    await Account.create(tenant="globex")
    claims = db.keys.in_bucket(bucket_of("acme", 4)).unique(
        Account.__flue_spec__.collection, "tenant"
    )
    assert await db.client.hget(claims, "acme") == first.id.encode()
    assert await first.delete()
    await Account.create(tenant="acme", plan="pro")
    report = await fm.verify_collection(Account)
    assert report.ok, report.drift
