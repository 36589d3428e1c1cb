"""``flue-models cluster split``: a collection moves into another number of buckets with
every record, index entry and owned key, counted; refusals move nothing; a rerun after a
failure finishes the move."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flue_models as fm
from flue_models import Indexed, Model
from flue_models.errors import SchemaError
from flue_models.keys import KeySpace, bucket_of
from flue_models.model.buckets import partition_field, stored_buckets
from flue_models.schema import split as split_module
from flue_models.schema.split import split_collection
from tests.command_line import run_cli
from tests.integration.models import Ticket
from tests.migrations.layouts import declaring

#: A split renames keys into other slots: a standalone server only (a cluster refuses it).
pytestmark = pytest.mark.standalone


class Parcel(Model):
    """A model with indexes, a compound index and a list each record owns."""

    class Meta:
        collection = "it_parcel"
        order_by = "weight"
        indexes = (("city", "express"),)

    id: str = fm.new_id()
    city: Annotated[str, Indexed()]
    express: Annotated[bool, Indexed()]
    weight: int = 0

    @classmethod
    def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
        return [keys.owned("it_parcel", "scans", record_id)]


async def fill_parcels(db: fm.Database, count: int = 120) -> list[Parcel]:
    parcels = [
        Parcel(id=f"p-{n}", city=("oslo", "rome", "lima")[n % 3], express=n % 4 == 0, weight=n % 17)
        for n in range(count)
    ]
    await Parcel.save_many(parcels)
    for parcel in parcels[::10]:
        (scans,) = Parcel.owned_keys(Parcel.__flue_spec__.keys_of(db.keys, parcel.id), parcel.id)
        await db.client.rpush(scans, f"scan of {parcel.id}")
    return parcels


async def listings(db: fm.Database) -> list[list[str]]:
    """Every listing the tests compare, as ids in order."""
    queries = [
        Parcel.find(),
        Parcel.find().sort_by("-weight"),
        Parcel.find(Parcel.city == "rome"),
        Parcel.find(Parcel.city == "oslo", Parcel.express == True),  # noqa: E712
        Parcel.find(Parcel.city.in_(["lima", "rome"]), Parcel.weight >= 5),
    ]
    return [[p.id for p in await query.all()] for query in queries]


async def all_keys(db: fm.Database) -> dict[str, object]:
    """Every key of the prefix and its value, read by type: what a refusal must not
    change (not DUMP: a hash's dump follows its table's order, which reads can change)."""
    keys = sorted([k async for k in db.client.scan_iter(match=db.keys.pattern())])
    read = {
        b"hash": lambda key: ("HGETALL", key),
        b"zset": lambda key: ("ZRANGE", key, 0, -1, "WITHSCORES"),
        b"list": lambda key: ("LRANGE", key, 0, -1),
        b"string": lambda key: ("GET", key),
    }
    kinds = await db.run_batch([("TYPE", key) for key in keys])
    found: dict[str, object] = {}
    for key, kind in zip(keys, kinds, strict=True):
        kind = kind if isinstance(kind, bytes) else kind.encode()
        (value,) = await db.run_batch([read[kind](key)])
        found[key.decode()] = (kind, sorted(value.items()) if isinstance(value, dict) else value)
    return found


async def test_a_collection_moves_into_eight_buckets_and_back(db: fm.Database) -> None:
    parcels = await fill_parcels(db)
    before = await listings(db)
    versions = {p.id: p.version for p in parcels}

    report = await split_collection(db, "it_parcel", 8)
    moving = [p for p in parcels if bucket_of(p.id, 8) != 0]
    assert (report.records, report.moved) == (120, len(moving))
    assert (await stored_buckets(db))["it_parcel"] == 8
    with declaring(Parcel, 8):
        db.checked_buckets.clear()
        verified = await fm.verify_collection(Parcel)
        assert verified.ok, verified.drift
        assert verified.records == 120
        assert await listings(db) == before
        for parcel in parcels[::10]:
            keys = db.keys.in_bucket(bucket_of(parcel.id, 8))
            scans = keys.owned("it_parcel", "scans", parcel.id)
            assert await db.client.lrange(scans, 0, -1) == [f"scan of {parcel.id}".encode()]
        stored = await Parcel.get_many([p.id for p in parcels])
        assert {p.id: p.version for p in stored if p} == versions  # moves keep versions
        updated = await stored[7].update(weight=3)  # type: ignore[union-attr]
        assert updated.version > max(versions.values())  # the seeded counters go on
        again = await split_collection(db, "it_parcel", 8)
        assert again.moved == 0  # nothing left to move: idempotent

    back = await split_collection(db, "it_parcel", 1)
    assert back.moved == len(moving)
    assert "it_parcel" not in await stored_buckets(db)
    assert len(back.removed) == 7  # the counters of buckets 1-7
    db.checked_buckets.clear()
    verified = await fm.verify_collection(Parcel)
    assert verified.ok, verified.drift
    listed = await listings(db)
    assert sorted(listed[0]) == sorted(before[0])
    assert all(key.startswith(db.keys.head + "{it_parcel:0}") or "it_parcel" not in key
               for key in await all_keys(db))  # fmt: skip


async def test_a_split_places_records_by_the_partition_field(db: fm.Database) -> None:
    parcels = await fill_parcels(db)
    before = await listings(db)
    report = await split_collection(db, "it_parcel", 4, partition_by="city")
    cities = {bucket_of(city, 4) for city in ("oslo", "rome", "lima")}
    assert (report.records, report.moved) == (120, sum(bucket_of(p.city, 4) != 0 for p in parcels))
    assert await db.client.hget(db.keys.meta, partition_field("it_parcel")) == b"city"
    with declaring(Parcel, 4, "city"):
        db.checked_buckets.clear()
        verified = await fm.verify_collection(Parcel)
        assert verified.ok, verified.drift
        assert await listings(db) == before
        for parcel in parcels:
            keys = db.keys.in_bucket(bucket_of(parcel.city, 4))
            assert await db.client.exists(keys.record("it_parcel", parcel.id)) == 1
        for parcel in parcels[::10]:
            keys = db.keys.in_bucket(bucket_of(parcel.city, 4))
            scans = keys.owned("it_parcel", "scans", parcel.id)
            assert await db.client.lrange(scans, 0, -1) == [f"scan of {parcel.id}".encode()]
        held = [await db.client.zcard(db.keys.in_bucket(b).all("it_parcel")) for b in range(4)]
        assert {b for b in range(4) if held[b]} == cities
        assert (await split_collection(db, "it_parcel", 4)).moved == 0  # the stored field
    with declaring(Parcel, 4):
        db.checked_buckets.clear()
        with pytest.raises(fm.errors.SchemaLayoutError):
            await Parcel.find().count()

    back = await split_collection(db, "it_parcel", 1)  # the model's own field: id
    assert back.moved == report.moved
    assert await db.client.hget(db.keys.meta, partition_field("it_parcel")) is None
    db.checked_buckets.clear()
    assert (await fm.verify_collection(Parcel)).ok
    assert await listings(db) == before


async def test_a_row_without_its_partition_field_refuses_the_split(db: fm.Database) -> None:
    parcels = await fill_parcels(db, 30)
    await db.client.hdel(Parcel.__flue_spec__.record_key(db.keys, parcels[5].id), "city")
    before = await all_keys(db)
    with pytest.raises(SchemaError, match="no 'city' field to place it by"):
        await split_collection(db, "it_parcel", 4, partition_by="city")
    assert await all_keys(db) == before


async def test_a_model_declaring_the_new_count_is_refused_until_the_split(
    db: fm.Database,
) -> None:
    await fill_parcels(db, 20)
    with declaring(Parcel, 4):
        db.checked_buckets.clear()
        with pytest.raises(
            fm.errors.SchemaLayoutError, match="cluster split it_parcel --buckets 4"
        ):
            await Parcel.find().count()
        await split_collection(db, "it_parcel", 4)
        assert await Parcel.find().count() == 20


async def test_a_rerun_after_a_failure_finishes_the_move(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    parcels = await fill_parcels(db)
    before = await listings(db)
    move = split_module._move
    calls = 0

    async def failing_move(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 30:
            raise fm.ConnectionLostError("test", "EVALSHA", "killed mid-split")
        await move(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(split_module, "_move", failing_move)
    with pytest.raises(fm.ConnectionLostError):
        await split_collection(db, "it_parcel", 8)
    assert "it_parcel" not in await stored_buckets(db)  # the count is recorded last
    monkeypatch.setattr(split_module, "_move", move)
    report = await split_collection(db, "it_parcel", 8)
    assert report.moved == len([p for p in parcels if bucket_of(p.id, 8) != 0]) - 29
    with declaring(Parcel, 8):
        db.checked_buckets.clear()
        assert (await fm.verify_collection(Parcel)).ok
        assert await listings(db) == before


async def test_refusals_move_nothing(db: fm.Database, redis_url: str, key_prefix: str) -> None:
    await fill_parcels(db, 30)
    await Ticket(id="t-1", status="open", priority=1, email="a@b").save()
    untouched = await all_keys(db)

    with pytest.raises(fm.ConfigurationError, match="power of two"):
        await split_collection(db, "it_parcel", 3)
    with pytest.raises(fm.ConfigurationError, match="flue-models' own"):
        await split_collection(db, "session", 4)
    with pytest.raises(SchemaError, match="unique claims"):
        await split_collection(db, "it_ticket", 4)

    other = await fm.connect(redis_url, key_prefix=key_prefix)
    try:
        with pytest.raises(fm.errors.WritersActiveError):
            await split_collection(db, "it_parcel", 4)
    finally:
        await other.close()

    # A row whose record of its entries is unreadable: refused before the first move.
    victim = next(p for p in (f"p-{n}" for n in range(30)) if bucket_of(p, 4) != 0)
    await db.client.hset(db.keys.record("it_parcel", victim), "_owned", b"{not json")
    untouched = await all_keys(db)
    with pytest.raises(SchemaError, match="verify --repair"):
        await split_collection(db, "it_parcel", 4)
    assert await all_keys(db) == untouched
    assert await db.client.exists(db.keys.migration_lock) == 0  # the lock was released


def test_the_command_line_splits_and_says_so_in_one_line(redis_url: str, key_prefix: str) -> None:
    common = ["--url", redis_url, "--prefix", key_prefix]
    assert run_cli("migrate", *common).returncode == 0
    unknown = run_cli("cluster", "split", "it_parcel", "--buckets", "4", *common)
    assert unknown.returncode == 2  # no record yet: it might be a typo
    assert "No collection 'it_parcel'" in unknown.stderr
    model = ["--model", "tests.migrations.test_split:Parcel"]
    wrong = run_cli("cluster", "split", "it_parce", "--buckets", "4", *model, *common)
    assert wrong.returncode == 2
    assert "model of collection 'it_parcel', not 'it_parce'" in wrong.stderr
    done = run_cli("cluster", "split", "it_parcel", "--buckets", "4", *model, *common)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "it_parcel: 0 of 0 record(s) moved; 4 bucket(s) now"
    refused = run_cli("cluster", "split", "session", "--buckets", "4", *common)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: ")
    placed = run_cli(
        "cluster", "split", "it_parcel", "--buckets", "8", "--partition-by", "city", *common
    )
    assert placed.returncode == 0, placed.stderr
    assert placed.stdout.strip() == "it_parcel: 0 of 0 record(s) moved; 8 bucket(s) now"
    usage = run_cli("cluster", "split", "it_parcel", "--buckets", "five", *common)
    assert usage.returncode == 2


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(
        st.text(alphabet="abcxyz-09é", min_size=1, max_size=6), min_size=0, max_size=40, unique=True
    ),
    weights=st.lists(st.integers(min_value=0, max_value=4), min_size=40, max_size=40),
    buckets=st.sampled_from([2, 4, 8, 16]),
)
async def test_any_split_keeps_every_listing(
    db: fm.Database, ids: list[str], weights: list[int], buckets: int
) -> None:
    """Whatever the ids and the count, a split and a split back list what was listed."""
    await clear(db)
    parcels = [
        Parcel(id=i, city=("oslo", "rome")[w % 2], express=w == 0, weight=w)
        for i, w in zip(ids, weights, strict=False)
    ]
    await Parcel.save_many(parcels)
    before = await listings(db)
    await split_collection(db, "it_parcel", buckets)
    with declaring(Parcel, buckets):
        db.checked_buckets.clear()
        assert await listings(db) == before
        assert (await fm.verify_collection(Parcel)).ok
    await split_collection(db, "it_parcel", 1)
    db.checked_buckets.clear()
    assert await listings(db) == before
    assert (await fm.verify_collection(Parcel)).ok


async def clear(db: fm.Database) -> None:
    """Remove every key of the prefix but the schema record (kept: the store stays migrated)."""
    async for key in db.client.scan_iter(match=db.keys.pattern()):
        if not key.endswith(b"{meta}"):
            await db.client.delete(key)
    await db.client.hdel(db.keys.meta, "buckets:it_parcel")
    db.checked_buckets.clear()


async def test_gathering_into_one_bucket_moves_unique_claims_with_their_records(
    db: fm.Database,
) -> None:
    """Records spread with their claims (as a hand edit or an older tool could leave them)
    come back into one bucket with the claims: verify is clean and a claimed value is
    still refused to another record."""
    spec = Ticket.__flue_spec__
    Ticket.__flue_spec__ = dataclasses.replace(spec, buckets=4)
    try:
        db.checked_buckets.add("it_ticket")  # written as spread, on purpose
        for n in range(12):
            await Ticket(id=f"t-{n}", status="open", priority=n, email=f"{n}@x").save()
    finally:
        Ticket.__flue_spec__ = spec
    report = await split_collection(db, "it_ticket", 1)
    assert report.moved == sum(1 for n in range(12) if bucket_of(f"t-{n}", 4) != 0)
    assert report.moved > 0
    db.checked_buckets.clear()
    verified = await fm.verify_collection(Ticket)
    assert verified.ok, verified.drift
    with pytest.raises(fm.UniqueViolationError):
        await Ticket(id="t-new", status="open", priority=1, email="7@x").save()
    claims = await db.client.hgetall(db.keys.unique("it_ticket", "email"))
    assert len(claims) == 12
