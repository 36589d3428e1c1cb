"""``flue-models cluster split``: move a collection's records into another number of buckets.

A collection's bucket count (``Meta.buckets``) is chosen once; changing it moves every
record whose bucket changes, with its index entries, unique claims and owned keys, one
atomic ``bucket_move`` script call per record. Keys of two buckets are in two Cluster
slots, so the split runs on a standalone server (move the store into a cluster
afterwards), with the collection's writers stopped.

Fail closed: everything is read and checked before the first move (every key is one
of the layout, every row to move has a readable record of what it owns, no unique claim
on a collection of more than one bucket, no other flue-models client on the prefix).
Idempotent and resumable: a record already in its bucket is left where it is, so a rerun
after a failure moves what is left. The new count is recorded last.

Example:
    ```python
    report = await split_collection(db, "ticket", 16)
    print(report.moved, "of", report.records, "records moved")
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from flue_models.connection import Database
from flue_models.errors import (
    CommandError,
    ConfigurationError,
    DecodeError,
    SchemaError,
    WritersActiveError,
)
from flue_models.keys import (
    MAX_BUCKETS,
    bucket_of,
    check_collection,
    decode_segment,
    encode_segment,
    is_bucket_count,
)
from flue_models.model.base import registered_model
from flue_models.model.buckets import bucket_field, partition_field
from flue_models.model.spec import OWNED_FIELD, VERSION_FIELD, decode_owned
from flue_models.replies import reply_text
from flue_models.schema.lock import MigrationLock

#: Keys read per round trip while checking.
BATCH = 500
#: Attempts to move one record whose row changes between the read and the move.
MOVE_ATTEMPTS = 5


@dataclass
class SplitReport:
    """What :func:`split_collection` did.

    Example:
        ```python
        report = await split_collection(db, "ticket", 16)
        report.records, report.moved   # (1000, 938)
        ```
    """

    collection: str
    buckets: int
    records: int = 0
    moved: int = 0
    #: Counters of buckets beyond the new count, removed once their records moved.
    removed: list[str] = field(default_factory=list)


@dataclass
class _Found:
    records: list[tuple[str, int, str]] = field(default_factory=list)  # key, bucket, id
    owned: dict[tuple[int, str], list[str]] = field(default_factory=dict)  # (bucket, seg)
    counters: dict[int, str] = field(default_factory=dict)
    uniques: list[str] = field(default_factory=list)


async def split_collection(
    db: Database,
    collection: str,
    buckets: int,
    *,
    partition_by: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SplitReport:
    """Move ``collection``'s records into ``buckets`` buckets and record the new count.

    ``partition_by``: the field whose value places each record (``Meta.partition_by``);
    by default the one its model declares, if it is imported, else the one the store
    records, else ``id``.

    Raises:
        ConfigurationError: the count is not a power of two up to 1024, the server is a
            cluster, the collection is one of the library's own (the migrations set
            their counts), or the store knows no such collection.
        WritersActiveError: another flue-models client is connected to the prefix.
        SchemaError: a key or a row cannot be moved as it is (the message names it and
            says what to do); nothing was moved.
        MigrationLockError: a migration or another split holds the prefix's lock.

    Example:
        ```python
        await split_collection(db, "ticket", 16)   # then declare Meta.buckets = 16
        await split_collection(db, "order", 16, partition_by="tenant")
        ```
    """
    check_collection(collection)
    if not is_bucket_count(buckets):
        raise ConfigurationError(f"--buckets must be a power of two from 1 to {MAX_BUCKETS}.")
    if isinstance(db.client, RedisCluster):
        raise ConfigurationError(
            "A split moves keys between slots, which a cluster refuses: run it on a "
            "standalone server, then import the store into the cluster. Nothing was moved."
        )
    model = registered_model(collection)
    if model is not None and model.__module__.startswith("flue_models."):
        raise ConfigurationError(
            f"Collection {collection!r} is one of flue-models' own: its bucket count is "
            "part of the stored layout. Nothing was moved."
        )
    if model is None and not await _known(db, collection):
        raise ConfigurationError(
            f"No collection {collection!r} in this store: no record, no bucket count and no "
            "imported model by that name (check the spelling; for a collection with no "
            "record yet, import its model: --model on the command line). Nothing was moved."
        )
    await refuse_other_clients(db)
    lock = MigrationLock(db)
    await lock.acquire(db, wait=0)
    try:
        return await _move_collection(db, collection, buckets, partition_by, progress)
    finally:
        await lock.release(db)


async def _known(db: Database, collection: str) -> bool:
    """Whether the store holds a bucket count or any key of ``collection``."""
    if await db.client.hexists(db.keys.meta, bucket_field(collection)):
        return True
    pattern = db.keys.buckets_pattern(collection)
    async for raw in db.client.scan_iter(match=pattern, count=1000):
        if db.keys.bucket_in_key(collection, reply_text(raw)) is not None:
            return True
    return False


async def _move_collection(
    db: Database,
    collection: str,
    buckets: int,
    partition_by: str | None,
    progress: Callable[[str], None] | None,
) -> SplitReport:
    """The checks, the moves and the new count, under the lock :func:`split_collection`
    holds."""
    say = progress or (lambda _text: None)
    report = SplitReport(collection, buckets)
    placed_by = await _placement(db, collection, partition_by)
    found = await _scan(db, collection)
    report.records = len(found.records)
    uniques = [key for key in found.uniques if key.rsplit(":", 1)[1] != placed_by]
    if buckets > 1 and await _holds_claims(db, uniques):
        raise SchemaError(
            f"Collection {collection!r} holds unique claims on another field than "
            f"{placed_by!r}, which need every record in one bucket; drop Unique() from its "
            "model (and the claims with `verify --repair`) before splitting it. Nothing "
            "was moved."
        )
    places = await _partitions(db, found.records, placed_by)
    targets = {key: bucket_of(places[key], buckets) for key, _b, _id in found.records}
    moves = [r for r in found.records if r[1] != targets[r[0]]]
    if moves:  # again, under the lock: a client that connected since the first check
        await refuse_other_clients(db)
    await _check_rows(db, collection, moves)
    say(f"{len(moves)} of {len(found.records)} record(s) of {collection} to move")
    await _seed_counters(db, collection, found.counters, buckets)
    for key, bucket, record_id in moves:
        await _move(db, collection, key, bucket, record_id, targets[key], found)
        report.moved += 1
        if report.moved % BATCH == 0:
            say(f"{report.moved} of {len(moves)} moved")
    for bucket, counter in sorted(found.counters.items()):
        if bucket >= buckets:
            await db.client.delete(counter)
            report.removed.append(counter)
    if buckets == 1:
        await db.client.hdel(db.keys.meta, bucket_field(collection), partition_field(collection))
    else:
        layout = [partition_field(collection), placed_by, bucket_field(collection), buckets]
        await db.run_batch([("HSET", db.keys.meta, *layout)])
    db.checked_buckets.discard(collection)
    return report


async def _scan(db: Database, collection: str) -> _Found:
    """Every key of the collection in every bucket, by kind; refuse one of no known kind."""
    found = _Found()
    async for raw in db.client.scan_iter(match=db.keys.buckets_pattern(collection), count=1000):
        key = reply_text(raw)
        bucket = db.keys.bucket_in_key(collection, key)
        if bucket is None:
            continue  # another collection whose name starts alike ({ticket_x:...})
        keys = db.keys.in_bucket(bucket)
        kind = keys.classify(collection, key)
        base = keys.record_prefix(collection)[:-1]
        if kind == "record":
            record_id = decode_segment(key[len(base) + 1 :]).decode("utf-8", "surrogateescape")
            found.records.append((key, bucket, record_id))
        elif kind == "counter":
            found.counters[bucket] = key
        elif kind == "unique":
            found.uniques.append(key)
        elif kind == "index":
            pass  # entries move with the records that own them
        elif (parts := keys.bucket_key_parts(collection, key)) and parts[1] is not None:
            # a key a record owns: it moves with it
            found.owned.setdefault((bucket, parts[1]), []).append(key)
        else:
            raise SchemaError(
                f"{key} is a key of the whole bucket, not of one record: a split cannot "
                "move it. Nothing was moved."
            )
    found.records.sort()
    return found


async def _placement(db: Database, collection: str, partition_by: str | None) -> str:
    """The field that places the collection's records: ``partition_by``, else its
    imported model's, else the one the store records, else ``id``."""
    if partition_by is not None:
        return partition_by
    model = registered_model(collection)
    if model is not None:
        return model.__flue_spec__.partition_by
    stored = await db.client.hget(db.keys.meta, partition_field(collection))
    return "id" if stored is None else reply_text(stored)


async def _partitions(
    db: Database, records: list[tuple[str, int, str]], placed_by: str
) -> dict[str, str]:
    """Each row's partition value (its id, or its ``placed_by`` field); refuse a row
    without one before the first move."""
    if placed_by == "id":
        return {key: record_id for key, _bucket, record_id in records}
    places: dict[str, str] = {}
    for start in range(0, len(records), BATCH):
        part = records[start : start + BATCH]
        values = await db.run_batch(
            [("HGET", key, placed_by) for key, _b, _id in part], return_errors=True
        )
        for (key, _bucket, _id), value in zip(part, values, strict=True):
            if isinstance(value, Exception) or value is None:
                raise SchemaError(
                    f"{key} has no {placed_by!r} field to place it by. Nothing was moved."
                )
            places[key] = reply_text(value)
    return places


async def _holds_claims(db: Database, uniques: list[str]) -> bool:
    if not uniques:
        return False
    sizes = await db.run_batch([("HLEN", key) for key in uniques], return_errors=True)
    return any(isinstance(size, Exception) or int(size) > 0 for size in sizes)


async def _check_rows(db: Database, collection: str, moves: list[tuple[str, int, str]]) -> None:
    """Refuse before the first move when a row to move cannot be moved as it is."""
    for start in range(0, len(moves), BATCH):
        part = moves[start : start + BATCH]
        owned = await db.run_batch(
            [("HGET", key, OWNED_FIELD) for key, _b, _id in part], return_errors=True
        )
        for (key, bucket, record_id), raw in zip(part, owned, strict=True):
            if (
                isinstance(raw, Exception)
                or raw is None
                or _renamed(db, collection, raw, bucket, 0) is None
            ):
                raise SchemaError(
                    f"{key} has no readable record of the index entries it owns "
                    f"({OWNED_FIELD}); run `flue-models verify --repair` with its model "
                    "first. Nothing was moved."
                )
            try:
                encode_segment(record_id)
            except ConfigurationError:
                raise SchemaError(f"{key} does not name a UTF-8 id. Nothing was moved.") from None


def _renamed(
    db: Database, collection: str, raw: bytes, source: int, target: int
) -> tuple[bytes, list[tuple[str, str, str]], list[tuple[str, str, bytes]]] | None:
    """The row's ``_owned`` in bucket ``target``, and its (old key, new key, score)
    entries and (old key, new key, claimed value) claims; ``None`` when it is unreadable
    or names a key outside the row's bucket. (``_owned`` names keys relative to the row's
    bucket, so its text stays as it is.)"""
    old_base = db.keys.in_bucket(source).record_prefix(collection)
    new_base = db.keys.in_bucket(target).record_prefix(collection)
    try:
        owned, unique = decode_owned(db.keys, old_base + "x", raw)
    except DecodeError:
        return None
    if not all(key.startswith(old_base) for key in [*owned, *unique]):
        return None
    entries = [(k, new_base + k[len(old_base) :], repr(s)) for k, s in owned.items()]
    claims = [(k, new_base + k[len(old_base) :], v) for k, v in unique.items()]
    return raw, entries, claims


def _tag(db: Database, collection: str, bucket: int) -> str:
    """A bucket's keys relative to the prefix start with this (``{<collection>:<bucket>}``)."""
    return db.keys.relative(db.keys.in_bucket(bucket).record_prefix(collection))[:-1]


async def _seed_counters(
    db: Database, collection: str, counters: dict[int, str], buckets: int
) -> None:
    """Start every bucket's version counter at the highest any bucket reached, so versions
    stay increasing for every record whatever bucket it moves to."""
    values = await db.run_batch([("GET", key) for key in counters.values()])
    current = {
        bucket: int(value)
        for bucket, value in zip(counters, values, strict=True)
        if value is not None
    }
    highest = max(current.values(), default=0)
    behind = [
        ("SET", db.keys.in_bucket(bucket).version_counter(collection), highest)
        for bucket in range(buckets)
        if current.get(bucket, 0) < highest
    ]
    if behind:
        await db.run_batch(behind)


async def _move(
    db: Database,
    collection: str,
    key: str,
    bucket: int,
    record_id: str,
    target: int,
    found: _Found,
) -> None:
    new_key = db.keys.in_bucket(target).record(collection, record_id)
    segment = encode_segment(record_id)
    old_base, new_base = (db.keys.absolute(_tag(db, collection, b)) for b in (bucket, target))
    owned_keys = [  # '<prefix>::{c:b}/<name>:<id>' -> '<prefix>::{c:t}/<name>:<id>'
        (old, new_base + old[len(old_base) :]) for old in found.owned.get((bucket, segment), [])
    ]
    for _attempt in range(MOVE_ATTEMPTS):
        version, raw = await db.run_batch(
            [("HGET", key, VERSION_FIELD), ("HGET", key, OWNED_FIELD)]
        )
        if version is None:
            return  # deleted meanwhile
        renamed = _renamed(db, collection, raw, bucket, target) if raw is not None else None
        if renamed is None:
            raise SchemaError(
                f"{key} changed into a row that cannot be moved; nothing of it moved."
            )
        text, entries, claims = renamed
        keys = [key, new_key]
        args: list[object] = [reply_text(version), text, record_id, len(entries)]
        for old, new, score in entries:
            keys += [old, new]
            args.append(score)
        args.append(len(claims))
        for old, new, value in claims:
            keys += [old, new]
            args.append(value)
        args.append(len(owned_keys))
        for old, new in owned_keys:
            keys += [old, new]
        # Two buckets by design (a cluster was refused above).
        reply = await db.scripts.call("bucket_move", keys=keys, args=args, any_slots=True)
        status = reply_text(reply)
        if status == "moved":
            return
        if status == "taken":
            raise SchemaError(
                f"{new_key} (or a key it owns there) exists in bucket {target} while "
                f"{key} is in bucket {bucket}; find which copy is current and remove the "
                "other, then split again."
            )
    raise SchemaError(f"{key} kept changing while it was moved: stop its writers first.")


async def refuse_other_clients(db: Database) -> None:
    """Refuse while another flue-models client is connected to this prefix (their
    connections carry its name; see :attr:`Database.client_name`).

    Raises:
        WritersActiveError: naming them.
        SchemaError: this user may not run ``CLIENT LIST``.

    Example:
        ```python
        await refuse_other_clients(db)
        ```
    """
    try:
        clients = await db.client.execute_command("CLIENT LIST")
    except CommandError as exc:
        if not isinstance(exc.__cause__, NoPermissionError):
            raise
        raise SchemaError(
            "Moving keys checks that no other process uses the store (CLIENT LIST), which "
            "this user may not run; run it as a user that may, with the writers stopped."
        ) from exc
    mine = encode_segment(db.keys.prefix)
    others = []
    for client in clients:
        name = str(client.get("name", ""))
        parts = name.split(":")
        if parts[0] != "flue-models" or name == db.client_name:
            continue
        if len(parts) < 3 or parts[2] == mine:  # an older version names no prefix
            others.append(f"{client.get('addr')} {name}")
    if others:
        raise WritersActiveError(db.keys.prefix, others)
