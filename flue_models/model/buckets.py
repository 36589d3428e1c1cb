"""How many buckets each collection's records are stored in, by which field, and the
check of both.

A model declares ``Meta.buckets`` (a power of two, 1 by default); its records are spread
over that many buckets by the CRC16 of their id (:func:`flue_models.keys.bucket_of`),
each bucket with its own hash tag and so, on a cluster, its own slot. The schema record
keeps the count in a field ``buckets:<collection>`` (absent: 1), written when a
collection with more than one bucket is first used while it is still empty. A model
that declares another count than the stored one would miss records on reads and
scatter them on writes, so every database checks each collection once, before its first
read or write of it (and ``connect()`` checks every model declared by then), and refuses
a mismatch with :class:`~flue_models.errors.SchemaLayoutError`. A collection of more than
one bucket placed by another field than its id (``Meta.partition_by``) also has a field
``partition:<collection>`` naming it (absent: ``id``), checked the same way
(:class:`~flue_models.errors.SchemaLayoutError`).

Example:
    ```python
    class Ticket(fm.Model):
        class Meta:
            collection = "ticket"
            buckets = 16          # on a cluster, 16 slots share the collection
        id: str = fm.new_id()

    await check_collections(db, [Ticket.__flue_spec__])   # SchemaLayoutError on a mismatch
    ```
"""

from __future__ import annotations

from collections.abc import Iterable

from flue_models.connection import Database
from flue_models.errors import ForeignSchemaError, SchemaLayoutError
from flue_models.model.spec import ModelSpec
from flue_models.replies import reply_pairs, reply_text

#: The schema record field that says whether the store was ever migrated.
_VERSION_FIELD = "schema_version"


def partition_field(collection: str) -> str:
    """Return the schema record field naming the field a collection is placed by.

    Example:
        >>> partition_field("order")
        'partition:order'
    """
    return f"partition:{collection}"


def bucket_field(collection: str) -> str:
    """Return the schema record field holding a collection's bucket count.

    Example:
        >>> bucket_field("ticket")
        'buckets:ticket'
    """
    return f"buckets:{collection}"


async def stored_buckets(db: Database) -> dict[str, int]:
    """Return the bucket count the schema record holds for each collection that has one
    (a collection it does not name has one bucket).

    Raises:
        ForeignSchemaError: a count is not a number.

    Example:
        ```python
        await stored_buckets(db)   # {'ticket': 16}
        ```
    """
    record = reply_pairs(await db.client.hgetall(db.keys.meta))
    return _counts(db, record)


def _counts(db: Database, record: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for field, text in record.items():
        if field.startswith("buckets:"):
            if not text.isdigit() or int(text) < 1:
                raise ForeignSchemaError.not_a_version(db.keys.meta, field, text)
            counts[field.removeprefix("buckets:")] = int(text)
    return counts


async def check_collections(
    db: Database, specs: Iterable[ModelSpec], *, record: dict[str, str] | None = None
) -> None:
    """Check the bucket count of every model in ``specs`` (one read of the schema record;
    a first use of an empty collection with more than one bucket records its count).

    ``record``: the schema record as just read (``connect()`` passes the one its schema
    check read, when no migration changed it since); omitted, it is read here.

    Each database checks a collection once, before its first read or write of it: the
    model layer calls this only for a collection not yet in ``db.checked_buckets``.

    Raises:
        SchemaLayoutError: a model declares another count than the store holds, or
            (with more than one bucket) another ``Meta.partition_by`` than the store's
            records are placed by.
        ForeignSchemaError: a stored count is not a number.

    Example:
        ```python
        await check_collections(db, [Ticket.__flue_spec__, Invoice.__flue_spec__])
        ```
    """
    if record is None:
        record = reply_pairs(await db.client.hgetall(db.keys.meta))
    counts = _counts(db, record)
    for spec in specs:
        stored = counts.get(spec.collection)
        placed = record.get(partition_field(spec.collection), "id")
        if stored is None and spec.buckets > 1:
            stored, placed = await _first_use(db, spec, migrated=_VERSION_FIELD in record)
        if (stored or 1) != spec.buckets:
            raise SchemaLayoutError.buckets(
                db.keys.prefix, spec.collection, stored=stored or 1, declared=spec.buckets
            )
        if spec.buckets > 1 and placed != spec.partition_by:
            raise SchemaLayoutError.partition(
                db.keys.prefix, spec.collection, placed, spec.partition_by, spec.buckets
            )
        db.checked_buckets.add(spec.collection)


async def _first_use(db: Database, spec: ModelSpec, *, migrated: bool) -> tuple[int, str]:
    """The count and partition field of a collection the record does not name yet, which
    the model declares more than one bucket for: one bucket by id when it holds records
    (in bucket 0, where one-bucket writes put them), else the declared ones, recorded
    when the store has a record (the first client to record them wins)."""
    if await db.client.exists(db.keys.all(spec.collection)):
        return 1, "id"
    if not migrated:  # a maintenance connection to an unmigrated store: write nothing
        return spec.buckets, spec.partition_by
    field, placed = bucket_field(spec.collection), partition_field(spec.collection)
    # The field first, by every client, so a count is never read without its field.
    await db.client.hsetnx(db.keys.meta, placed, spec.partition_by)
    await db.client.hsetnx(db.keys.meta, field, str(spec.buckets))
    text, by = (reply_text(v) for v in await db.client.hmget(db.keys.meta, [field, placed]))
    if not text.isdigit():
        raise ForeignSchemaError.not_a_version(db.keys.meta, field, text)
    return int(text), by or "id"
