"""Check a collection's rows against its indexes and report every drift.

This is a maintenance tool, not a request path: it SCANs the collection's keys and
reads every index set, in bounded chunks. :func:`repair_collection` rebuilds what is
derived (index entries, unique claims) from the rows, which are the truth.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flue_models.connection import Database, pick_database
from flue_models.errors import ConfigurationError, ConflictError, CorruptDataError, DecodeError
from flue_models.keys import encode_segment
from flue_models.model.base import Model, iter_hashes
from flue_models.model.spec import OWNED_FIELD, owned_name
from flue_models.model.writes import held, plan_save, retry_on_conflict
from flue_models.replies import reply_hash, reply_text
from flue_models.scripts import checked_reply


@dataclass(frozen=True)
class Drift:
    """One disagreement between a record and the indexes.

    Attributes:
        kind: ``missing`` (a record lacks an entry), ``wrong_score``, ``orphan`` (an
            entry whose record does not exist), ``stale`` (an entry the record's values do
            not call for), ``undecodable`` (a record hash that cannot be read),
            ``wrong_type`` (a key of another type where a record, an index or claims are
            kept), ``misplaced`` (a record in another bucket than its id calls for: a
            hand edit or an unfinished ``cluster split``; reads by id do not find it).
        key: the index (or record) key concerned.
        record_id: the id concerned.
        detail: what was expected and what was found.
        claimed: for a unique claim, the claimed value.

    Example:
        ```python
        Drift("missing", "flue::ticket:idx:status:b3Blbg", "t-1", "expected score 1.0")
        ```
    """

    kind: str
    key: str
    record_id: str
    detail: str
    #: For a unique claim: the claimed value.
    claimed: str | None = None

    @property
    def shown_id(self) -> str:
        """The id as printable text: bytes that are not UTF-8 as backslash escapes.

        Example:
            ```python
            print(drift.shown_id)   # '\\xff\\xfe' for a member of bytes ff fe
            ```
        """
        return self.record_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class VerifyReport:
    """What :func:`verify_collection` found.

    Example:
        ```python
        report = await verify_collection(Ticket)
        assert report.ok, report.drift
        ```
    """

    collection: str
    records: int = 0
    entries: int = 0
    drift: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when rows and indexes agree exactly.

        Example:
            ```python
            assert (await verify_collection(Ticket)).ok
            ```
        """
        return not self.drift


@dataclass
class CollectionKeys:
    """The keys of one collection, by kind, as :func:`scan_collection` finds them.

    Example:
        ```python
        found = await scan_collection(db, "ticket")
        len(found.records), found.indexes[:3]
        ```
    """

    records: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)  # all, idx:*, rng:*
    uniques: list[str] = field(default_factory=list)  # uniq:*
    #: The bucket of each key found (from its hash tag).
    buckets: dict[str, int] = field(default_factory=dict)


async def scan_collection(db: Database, collection: str) -> CollectionKeys:
    """SCAN a collection's keys in every bucket and sort them by kind (a maintenance
    path, never a request). On a cluster the scan visits every primary.

    Example:
        ```python
        found = await scan_collection(db, "ticket")
        ```
    """
    found = CollectionKeys()
    pattern = db.keys.buckets_pattern(collection)
    async for raw_key in db.client.scan_iter(match=pattern, count=1000):
        key = reply_text(raw_key)
        bucket = db.keys.bucket_in_key(collection, key)
        if bucket is None:
            continue
        found.buckets[key] = bucket
        kind = db.keys.in_bucket(bucket).classify(collection, key)
        if kind == "index":
            found.indexes.append(key)
        elif kind == "unique":
            found.uniques.append(key)
        elif kind == "record":
            found.records.append(key)
    return found


#: Index entries read per round trip while verifying (a bounded reply each time).
ENTRY_CHUNK = 1000


def _member_text(member: bytes) -> str:
    """An id as text; bytes that are not UTF-8 (no id of ours) keep their escapes."""
    return member.decode("utf-8", "surrogateescape")


async def _read_set(db: Database, key: str) -> dict[str, float] | str:
    """Every entry of a sorted set, read ``ENTRY_CHUNK`` at a time; or the type found
    when the key is not a sorted set."""
    kind = reply_text(await db.client.type(key))
    if kind not in ("zset", "none"):
        return kind
    entries: dict[str, float] = {}
    start = 0
    while True:
        pairs: list[Any] = await db.client.zrange(
            key, start, start + ENTRY_CHUNK - 1, withscores=True
        )
        entries.update((_member_text(member), float(score)) for member, score in pairs)
        if len(pairs) < ENTRY_CHUNK:
            return entries
        start += ENTRY_CHUNK


async def verify_collection(model: type[Model], *, db: Database | None = None) -> VerifyReport:
    """Compare every record of ``model`` with every index entry of its collection.

    It never stops at what it finds: a key of the wrong type where a record, an index or
    a unique hash should be, an undecodable row, an id that is not UTF-8 are each a
    :class:`Drift`. Records are read 500 at a time and index sets 1,000 entries at a time,
    so no single call is large.

    Example:
        ```python
        report = await verify_collection(Ticket)
        for drift in report.drift:
            print(drift.kind, drift.key, drift.record_id, drift.detail)
        ```
    """
    database = pick_database(db)
    spec = model.__flue_spec__
    report = VerifyReport(collection=spec.collection)

    found = await scan_collection(database, spec.collection)
    index_keys, unique_keys = found.indexes, found.uniques

    expected: dict[str, dict[str, float]] = defaultdict(dict)
    expected_unique: dict[str, dict[str, str]] = defaultdict(dict)
    async for batch in iter_hashes(database, found.records):
        for key, raw in batch:
            if isinstance(raw, Exception):
                report.drift.append(Drift("wrong_type", key, "", f"not a record hash: {raw}"))
                continue
            try:
                record = model.from_hash(key, raw, database)
            except DecodeError as exc:
                report.drift.append(Drift("undecodable", key, "", str(exc)))
                continue
            report.records += 1
            keys = spec.keys_for(database.keys, record)
            if found.buckets[key] != keys.bucket:
                detail = (
                    f"in bucket {found.buckets[key]}; its {spec.partition_by} puts it in "
                    f"bucket {keys.bucket}"
                )
                report.drift.append(Drift("misplaced", key, record.id, detail))
            values = record._values()  # what the declaration calls for, not what it owns
            for entry_key, score in spec.entries(keys, values).items():
                expected[entry_key][record.id] = score
            for unique_key, value in spec.unique_claims(keys, values).items():
                expected_unique[unique_key][_member_text(value)] = record.id

    for key in sorted(set(expected) | set(index_keys)):
        have = await _read_set(database, key)
        want = expected.get(key, {})
        if isinstance(have, str):
            report.drift.append(Drift("wrong_type", key, "", f"a {have} where an index is kept"))
            continue
        report.entries += len(have)
        for record_id, score in want.items():
            if record_id not in have:
                report.drift.append(Drift("missing", key, record_id, f"expected score {score}"))
            elif have[record_id] != score:
                detail = f"expected {score}, found {have[record_id]}"
                report.drift.append(Drift("wrong_score", key, record_id, detail))
        for record_id in sorted(have.keys() - want.keys()):
            known = any(record_id in entries for entries in expected.values())
            kind = "stale" if known else "orphan"
            report.drift.append(Drift(kind, key, record_id, f"score {have[record_id]}"))

    for key in sorted(set(unique_keys) | set(expected_unique)):
        kind = reply_text(await database.client.type(key))
        if kind not in ("hash", "none"):
            report.drift.append(Drift("wrong_type", key, "", f"a {kind} where claims are kept"))
            continue
        raw_claims = reply_hash(await database.client.hgetall(key))
        have_claims = {_member_text(k): _member_text(v) for k, v in raw_claims.items()}
        want_claims = expected_unique.get(key, {})
        for claimed, record_id in want_claims.items():
            if have_claims.get(claimed) != record_id:
                report.drift.append(
                    Drift(
                        "missing", key, record_id, f"unique value {claimed!r} not claimed", claimed
                    )
                )
        for claimed in sorted(have_claims.keys() - want_claims.keys()):
            report.drift.append(
                Drift(
                    "orphan", key, have_claims[claimed], f"unique value {claimed!r} held", claimed
                )
            )
    return report


async def repair_collection(
    model: type[Model], report: VerifyReport, *, db: Database | None = None
) -> int:
    """Repair what ``report`` found, from the rows (the rows are the truth).

    * a record missing an entry or a claim, or with a wrong score: the record is saved
      again through the write path, which adds every entry and claim it calls for (under
      its version check: a concurrent writer wins, and its own save is exact);
    * a stale or orphan entry or claim: removed by the ``index_repair`` script only if the
      row, read inside the script, does not own it, so a racing writer is never undone;
    * a key of the wrong type where an index or claims are kept: deleted, then every
      record it should hold is saved again. Undecodable rows and wrong-type record keys
      are left as they are (nothing to derive them from) and stay in the next report;
      so are misplaced records (``flue-models cluster split`` moves them to their
      bucket).

    Returns the number of drifts acted on.

    Example:
        ```python
        report = await verify_collection(Ticket)
        if not report.ok:
            await repair_collection(Ticket, report)
        ```
    """
    database = pick_database(db)
    spec = model.__flue_spec__
    resave: dict[str, int] = {}  # id -> drifts its restore repairs
    acted = 0
    for drift in report.drift:
        if drift.kind in ("missing", "wrong_score"):
            resave[drift.record_id] = resave.get(drift.record_id, 0) + 1
            continue  # counted once restored
        elif drift.kind in ("stale", "orphan"):
            kind = "z" if drift.claimed is None else "u"
            member = drift.record_id if drift.claimed is None else drift.claimed
            raw_member = member.encode("utf-8", "surrogateescape")
            # The row that could own the entry: the one in the entry's own bucket (slot).
            bucket = database.keys.bucket_in_key(spec.collection, drift.key) or 0
            try:
                record_key = database.keys.in_bucket(bucket).record(
                    spec.collection, drift.record_id
                )
            except ConfigurationError:  # not UTF-8: no row of ours has this id
                remove = (
                    ("ZREM", drift.key, raw_member)
                    if kind == "z"
                    else ("HDEL", drift.key, raw_member)
                )
                await database.run_batch([remove])
                acted += 1
                continue
            token = owned_name(record_key, drift.key)  # as the row's _owned names it
            if kind == "u":
                token = f"!{token}={encode_segment(raw_member)}"
            try:
                await database.scripts.call(
                    "index_repair", keys=[record_key, drift.key], args=[kind, raw_member, token]
                )
            except UNREPAIRABLE:  # (a row whose _owned cannot be read): stays reported
                continue
        elif drift.kind == "wrong_type" and _derived(database, spec.collection, drift.key):
            await database.client.delete(drift.key)
            for record_id in await _ids_calling_for(model, database, drift.key):
                resave.setdefault(record_id, 0)
        else:
            continue
        acted += 1
    for record_id, drifts in sorted(resave.items()):
        with contextlib.suppress(*UNREPAIRABLE):  # stays in the next report
            if await _resave(model, database, record_id):
                acted += drifts
    return acted


#: What one repair may meet and leave for the next report, repairing the rest: a writer
#: that kept changing the row (retries spent), data it cannot read.
UNREPAIRABLE = (ConflictError, CorruptDataError)


def _derived(db: Database, collection: str, key: str) -> bool:
    """Whether ``key`` is an index or claims key of ``collection`` (rebuilt from rows)."""
    bucket = db.keys.bucket_in_key(collection, key)
    if bucket is None:
        return False
    return db.keys.in_bucket(bucket).classify(collection, key) in ("index", "unique")


async def _ids_calling_for(model: type[Model], db: Database, key: str) -> set[str]:
    spec = model.__flue_spec__
    ids: set[str] = set()
    found = await scan_collection(db, spec.collection)
    async for batch in iter_hashes(db, found.records):
        for record_key, raw in batch:
            record = model._from_reply(record_key, raw, db)
            if not isinstance(record, Model):
                continue  # not a record (verify reports it)
            values = record._values()
            keys = spec.keys_for(db.keys, record)
            if key in spec.entries(keys, values) or key in spec.unique_claims(keys, values):
                ids.add(record.id)
    return ids


async def _resave(model: type[Model], db: Database, record_id: str) -> bool:
    """Put back every entry and claim the row calls for, checked in the writing call
    against the row as read (its ``_owned``): a writer in between makes it read again. A
    value another record holds is left (the drift stays in the next report)."""

    async def attempt() -> bool:
        (record,) = await model.read_records([record_id], db=db)
        if record is None or isinstance(record, DecodeError):
            return False
        # What the row calls for, as a save plans it (as if it owned nothing yet).
        write = plan_save(record, db.keys, owns_nothing=True)
        entries, unique = write.entries, write.unique
        reply = await db.scripts.call(
            "index_restore",
            keys=[write.key, *entries, *unique],
            args=[
                held(record).snapshot[OWNED_FIELD],
                write.snapshot[OWNED_FIELD],
                record_id,
                len(entries), *entries.values(),
                len(unique), *unique.values(),
            ],
        )  # fmt: skip
        status, _reply = checked_reply("index_restore", reply, {"ok": 1, "changed": 1, "unique": 3})
        if status == "changed":
            raise ConflictError.stale(model.__name__, record_id, 0, 0)  # retried
        return status == "ok"

    return await retry_on_conflict(attempt)
