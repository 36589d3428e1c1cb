"""Check a collection's rows against its indexes and report every drift.

This is a maintenance tool, not a request path: it SCANs the collection's keys and
reads every index set in full.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flue_models.connection import Database, pick_database
from flue_models.model.base import Model, iter_hashes
from flue_models.model.errors import DecodeError
from flue_models.replies import reply_hash, reply_text


@dataclass(frozen=True)
class Drift:
    """One disagreement between a record and the indexes.

    Attributes:
        kind: ``missing`` (a record lacks an entry), ``wrong_score``, ``orphan`` (an
            entry whose record does not exist), ``stale`` (an entry the record's values do
            not call for), ``undecodable`` (a record hash that cannot be read).
        key: the index (or record) key concerned.
        record_id: the id concerned.
        detail: what was expected and what was found.

    Example:
        ```python
        Drift("missing", "flue:ticket:idx:status:b3Blbg", "t-1", "expected score 1.0")
        ```
    """

    kind: str
    key: str
    record_id: str
    detail: str


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


async def scan_collection(db: Database, collection: str) -> CollectionKeys:
    """SCAN a collection's keys and sort them by kind (a maintenance path, never a request).

    Example:
        ```python
        found = await scan_collection(db, "ticket")
        ```
    """
    found = CollectionKeys()
    pattern = db.keys.collection_pattern(collection)
    async for raw_key in db.client.scan_iter(match=pattern, count=1000):
        key = reply_text(raw_key)
        kind = db.keys.classify(collection, key)
        if kind == "index":
            found.indexes.append(key)
        elif kind == "unique":
            found.uniques.append(key)
        elif kind == "record":
            found.records.append(key)
    return found


async def verify_collection(model: type[Model], *, db: Database | None = None) -> VerifyReport:
    """Compare every record of ``model`` with every index entry of its collection.

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
    index_keys, unique_keys, record_keys = found.indexes, found.uniques, found.records

    expected: dict[str, dict[str, float]] = defaultdict(dict)
    expected_unique: dict[str, dict[str, str]] = defaultdict(dict)
    async for batch in iter_hashes(database, record_keys):
        for key, raw in batch:
            try:
                record = model.from_hash(key, raw, database)
            except DecodeError as exc:
                report.drift.append(Drift("undecodable", key, "", str(exc)))
                continue
            report.records += 1
            values = record._values()  # what the declaration calls for, not what it owns
            for entry_key, score in spec.entries(database.keys, values).items():
                expected[entry_key][record.id] = score
            for unique_key, value in spec.unique_claims(database.keys, values).items():
                expected_unique[unique_key][value.decode("utf-8", "surrogateescape")] = record.id

    actual: dict[str, dict[str, float]] = {}
    for key in index_keys:
        pairs: list[Any] = await database.client.zrange(key, 0, -1, withscores=True)
        actual[key] = {reply_text(member): float(score) for member, score in pairs}
        report.entries += len(pairs)
    for key in set(expected) | set(actual):
        want, have = expected.get(key, {}), actual.get(key, {})
        for record_id, score in want.items():
            if record_id not in have:
                report.drift.append(Drift("missing", key, record_id, f"expected score {score}"))
            elif have[record_id] != score:
                report.drift.append(
                    Drift(
                        "wrong_score", key, record_id, f"expected {score}, found {have[record_id]}"
                    )
                )
        for record_id in have.keys() - want.keys():
            known = any(record_id in entries for entries in expected.values())
            kind = "stale" if known else "orphan"
            report.drift.append(Drift(kind, key, record_id, f"score {have[record_id]}"))

    for key in set(unique_keys) | set(expected_unique):
        raw_claims = reply_hash(await database.client.hgetall(key))
        have_claims = {
            k.decode("utf-8", "surrogateescape"): reply_text(v) for k, v in raw_claims.items()
        }
        want_claims = expected_unique.get(key, {})
        for claimed, record_id in want_claims.items():
            if have_claims.get(claimed) != record_id:
                report.drift.append(
                    Drift("missing", key, record_id, f"unique value {claimed!r} not claimed")
                )
        for claimed in have_claims.keys() - want_claims.keys():
            report.drift.append(
                Drift("orphan", key, have_claims[claimed], f"unique value {claimed!r} held")
            )
    return report
