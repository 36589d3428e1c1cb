"""The one write path: a plan per record, one ``save`` script call, a typed result.

Every write of the library (``Model.save``, ``update``, ``create``, ``delete``,
``save_many``, ``rebuild_indexes`` and the state kinds' transitions) is built here:

1. :func:`plan_save` / :func:`plan_delete` compare a record with what it was read as and
   produce a :class:`Write`: the hash fields to set and delete, the index entries to add
   and remove, unique claims, owned keys and guards.
2. :func:`run_writes` encodes a list of writes as the ``save`` script's KEYS and ARGV,
   calls it once (atomic: every version, guard and unique check passes before anything
   is written), and decodes the reply into a typed error or the new versions.
3. :func:`retry_on_conflict` is the one "read, decide, write, and again on a conflict"
   loop of every compare-and-set in the library.

Each record stores the index entries and unique claims it owns in the hash field
``_owned`` (as rom rows do), so a save removes exactly what an earlier save added even
when the model's declaration has changed since.

Example:
    ```python
    write = plan_save(ticket, db.keys)
    await run_writes(db, [write])     # raises ConflictError, UniqueViolationError, ...
    ```
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from uuid import UUID

from flue_models.connection import Database
from flue_models.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConflictError,
    GuardError,
    UniqueViolationError,
)
from flue_models.keys import KeySpace
from flue_models.model.buckets import check_collections
from flue_models.model.codec import EPOCH
from flue_models.model.spec import (
    OWNED_FIELD,
    SEQ,
    ModelSpec,
    encode_owned,
    owned_scored,
    record_base,
)
from flue_models.replies import reply_hash, reply_text
from flue_models.scripts import checked_reply
from flue_models.slots import one_slot

if TYPE_CHECKING:
    from flue_models.model.base import Model

R = TypeVar("R")

#: Attempts :func:`retry_on_conflict` makes before it gives up with the last conflict.
MAX_ATTEMPTS = 50


class Held(NamedTuple):
    """What a copy of a record knows the store holds for it: the version it was read or
    written at, the encoded fields, the index entries and unique claims it owns, the
    database it belongs to, and the values the encoded fields were read as or written
    from (a field still holding that very object, of an immutable type, is not encoded
    again: see :func:`plan_save`). Immutable: a change replaces it, so copies never share
    one.

    Example:
        ```python
        held(ticket).version   # 7
        ```
    """

    version: int
    snapshot: dict[str, bytes]
    entries: dict[str, float]
    unique: dict[str, bytes]
    db: Database | None
    values: dict[str, Any]

    def __eq__(self, other: object) -> bool:
        """Equal when the store state is (``values`` only spares encoding work)."""
        return isinstance(other, Held) and self[:5] == other[:5]

    def __ne__(self, other: object) -> bool:
        return not self == other


#: The key of a record's :class:`Held` in pydantic's dict of private values (not an
#: identifier, so no private attribute of a model can have it; see ``Model._keep_held``).
KEPT = "flue held"
#: What a copy never read or written holds (shared: a Held is never changed in place).
_NOTHING_HELD = Held(0, {}, {}, {}, None, {})


def held(record: Model) -> Held:
    """The state ``record`` holds (the empty state for a copy never read or written).

    Example:
        ```python
        held(Ticket(status="open", priority=1)).version   # 0
        ```
    """
    private = record.__pydantic_private__
    return _NOTHING_HELD if private is None else private.get(KEPT, _NOTHING_HELD)


def hold(record: Model, **changes: Any) -> None:
    """Replace parts of the state ``record`` holds (see :class:`Held`). A new snapshot
    comes with the values it encodes, or with none (every field is then encoded again).

    Example:
        ```python
        hold(ticket, version=8)
        ```
    """
    if "snapshot" in changes:
        changes.setdefault("values", {})
    record._keep_held(held(record)._replace(**changes))


@dataclass
class Write:
    """One record's part of a ``save`` script call, and the state to keep once it lands.

    Attributes:
        record: the copy being written; synced with the store when the call succeeds.
        mode: ``"s"`` (save), ``"d"`` (delete) or ``"c"`` (check: only the version
            check, see :func:`plan_check`).
        key: the record's hash key.
        expected: the version the copy was read at (0: the record must not exist).
        hset: hash fields to set (encoded), ``hdel``: hash fields to delete.
        zrem: sorted sets to remove the id from; ``zadd``: sorted sets (and scores) to add
            it to.
        claims: unique values to claim (``uniq`` hash key, value, field name);
            ``releases``: unique values to release.
        lists: keys the record owns, each replaced by the given elements (``[]`` deletes).
        hashes: owned hashes, each replaced by the given fields (``{}`` deletes).
        absent: guard keys that must not exist for the write to happen.
        counter: ``(counter key, field)``: the field takes the counter's next value in
            the script, after every check passed, so a refused write consumes none;
            ``seq_scored`` are the sorted sets whose score is that value.
        clock: a datetime field that takes the server's time when the script writes
            (``seq_scored``: the sorted sets scored by it). With a counter too, it takes
            the counter's value read as microseconds since the epoch, and scores nothing.
        snapshot, entries, unique, values: what the copy holds once the write lands.

    Example:
        ```python
        write = plan_save(ticket, db.keys)
        write.absent = [guard_key]
        ```
    """

    record: Model
    mode: str
    key: str
    expected: int
    hset: dict[str, bytes] = field(default_factory=dict)
    hdel: list[str] = field(default_factory=list)
    zrem: list[str] = field(default_factory=list)
    zadd: dict[str, float] = field(default_factory=dict)
    claims: list[tuple[str, bytes, str]] = field(default_factory=list)
    releases: list[tuple[str, bytes]] = field(default_factory=list)
    lists: dict[str, list[bytes]] = field(default_factory=dict)
    hashes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    counter: tuple[str, str] | None = None
    clock: str | None = None
    seq_scored: set[str] = field(default_factory=set)
    snapshot: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, float] = field(default_factory=dict)
    unique: dict[str, bytes] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


#: Types whose values cannot change in place: a field still holding the object its
#: stored bytes were read as or written from keeps those bytes (see :func:`plan_save`).
_IMMUTABLE = frozenset({str, int, float, bool, bytes, dt.datetime, dt.date, Decimal, UUID})


def _encoded(spec: ModelSpec, values: dict[str, Any], state: Held) -> dict[str, bytes]:
    """Every set field's stored bytes: a field still holding the very (immutable) object
    ``state`` read or wrote keeps its bytes, any other is encoded."""
    prior, stored = state.values, state.snapshot
    if not prior:  # nothing read or written yet (a new record): every set field
        return {
            name: encode(value)
            for name, encode in spec.writers
            if (value := values[name]) is not None
        }
    encoded: dict[str, bytes] = {}
    for name, encode in spec.writers:
        value = values[name]
        if value is None:
            continue
        before = prior.get(name, _NONE)
        if before is value:
            same = type(value) in _IMMUTABLE or isinstance(value, Enum)
        else:  # text and whole numbers: an equal value is encoded alike
            same = type(value) is type(before) and type(value) in _EQUAL and value == before
        kept = stored.get(name) if same else None
        encoded[name] = encode(value) if kept is None else kept
    return encoded


_NONE = object()
#: Types whose equal values are encoded alike (a float is not one: 0.0 == -0.0).
_EQUAL = frozenset({str, int})


# Plans -------------------------------------------------------------------------------


def plan_save(
    record: Model,
    keys: KeySpace,
    *,
    owns_nothing: bool = False,
    counter: tuple[str, str] | None = None,
    clock: str | None = None,
) -> Write:
    """Plan the write of ``record``: only what changed since it was read.

    Args:
        record: the copy to write.
        keys: the key space of the database it goes to.
        owns_nothing: plan as if the record held no index entry or unique claim (its
            collection's indexes were just dropped, to be rebuilt).
        counter: ``(counter key, field)``: the (integer) field takes the counter's next
            value inside the script (see :class:`Write`).
        clock: the (datetime) field that takes the server's time inside the script,
            whatever the copy holds in it; with ``counter``, the time the counter's value
            reads as (see :class:`Write`).

    Raises:
        ConfigurationError: a clock field that does not hold a datetime, or that scores
            an index entry beside a counter.

    Example:
        ```python
        write = plan_save(ticket, db.keys)
        write.hset   # {'status': b'closed', '_owned': b'...'}
        ticket.closed_at = ticket.opened_at   # any datetime: the server's time is written
        write = plan_save(ticket, db.keys, clock="closed_at")
        ```
    """
    spec = record.__flue_spec__
    keys = spec.keys_for(keys, record)
    values = record._values()
    state = held(record)  # what the copy knows the store holds, read once
    encoded = _encoded(spec, values, state)
    stored, version = state.snapshot, state.version
    placed = spec.partition_by
    if placed != "id" and version and stored.get(placed) != encoded[placed]:
        name = type(record).__name__
        raise ConfigurationError(
            f"{name} {record.id!r}: {placed!r} places the record and cannot change; nothing "
            f"was written. Create a new record with the new {placed} and delete this one."
        )
    entries = spec.entries(keys, values)
    unique = spec.unique_claims(keys, values) if spec.unique_fields else {}
    seq_scored: set[str] = set()
    if counter is not None or clock is not None:  # the sets scored by the stamped field
        stamped = _stamped(record, values, counter, clock)
        seq_scored = spec.scored_by(keys, stamped, entries)
        encoded[stamped] = SEQ.encode()
        if counter is not None and clock is not None:  # the clock follows the counter
            if spec.scored_by(keys, clock, entries):
                raise ConfigurationError(
                    f"{type(record).__name__}.{clock} follows a counter: it cannot score "
                    "an index entry (the counter's value does)."
                )
            encoded[clock] = SEQ.encode()
    old_entries, old_unique = state.entries, state.unique
    owned = stored.get(OWNED_FIELD)
    key = keys.record(spec.collection, values["id"])
    if owned is None or seq_scored or entries != old_entries or unique != old_unique:
        owned = encode_owned(record_base(key), entries, unique, seq_scored)
    encoded[OWNED_FIELD] = owned
    if owns_nothing:
        old_entries, old_unique = {}, {}
    return Write(
        record=record,
        mode="s",
        key=key,
        expected=version,
        # Each part as the difference from what the copy held; with nothing held (a new
        # record, the common save) that is all of it, taken without a pass to compare.
        hset={k: v for k, v in encoded.items() if stored.get(k) != v} if stored else dict(encoded),
        hdel=[k for k in stored if k not in encoded] if stored else [],
        zrem=[
            *(k for k in old_entries if k not in entries),
            *(k for k in spec.disowned(keys, values, entries) if k not in old_entries),
        ]
        if old_entries
        else spec.disowned(keys, values, entries),
        zadd={k: s for k, s in entries.items() if k in seq_scored or old_entries.get(k) != s}
        if old_entries
        else dict(entries),
        claims=[(k, v, spec.unique_field(k)) for k, v in unique.items() if old_unique.get(k) != v]
        if unique
        else [],
        releases=[(k, v) for k, v in old_unique.items() if unique.get(k) != v]
        if old_unique
        else [],
        counter=counter,
        clock=clock,
        seq_scored=seq_scored,
        snapshot=encoded,
        entries=entries,
        unique=unique,
        values=values,
    )


def _stamped(
    record: Model, values: dict[str, Any], counter: tuple[str, str] | None, clock: str | None
) -> str:
    """The field whose value scores what a script stamps: a counter's, else the
    clock's (one of the two is given: ``clock`` is set when ``counter`` is not)."""
    if clock is not None and not isinstance(values.get(clock), dt.datetime):
        raise ConfigurationError(
            f"{type(record).__name__}.{clock} takes the server's time when written: it "
            f"must hold a datetime (any), not {values.get(clock)!r}."
        )
    return counter[1] if counter is not None else clock  # type: ignore[return-value]


def plan_check(record: Model, keys: KeySpace) -> Write:
    """Plan a version check of ``record`` that writes nothing: a batch that holds it is
    refused with ``ConflictError`` when the record changed since its copy was read.

    Example:
        ```python
        # write the child only while the parent is as it was read
        await run_writes(db, [plan_save(child, db.keys), plan_check(parent, db.keys)])
        ```
    """
    spec = record.__flue_spec__
    key = spec.keys_for(keys, record).record(spec.collection, record.id)
    return Write(record=record, mode="c", key=key, expected=held(record).version)


def plan_delete(record: Model, keys: KeySpace) -> Write:
    """Plan the deletion of ``record``: its hash, every entry it owns, its owned keys.

    Example:
        ```python
        await run_writes(db, [plan_delete(ticket, db.keys)])
        ```
    """
    spec = record.__flue_spec__
    keys = spec.keys_for(keys, record)
    values = record._values()
    entries = spec.entries(keys, values)
    state = held(record)
    return Write(
        record=record,
        mode="d",
        key=keys.record(spec.collection, record.id),
        expected=state.version,
        # What it owns, and every set its values or their finite domains could have
        # left a stale entry of it in (a delete leaves no trace in any index).
        zrem=list(
            dict.fromkeys(
                [
                    *state.entries,
                    *entries,
                    *spec.disowned(keys, values, entries),
                ]
            )
        ),
        releases=list(state.unique.items()),
        lists={key: [] for key in type(record).owned_keys(keys, record.id)},
        absent=type(record).delete_guards(keys, record.id),
    )


# The script call ---------------------------------------------------------------------


#: A record's head in ``save``'s ARGV: its mode and counts (the layout ``save.lua``
#: documents; Lua's ``struct.unpack`` reads it with ``>c1I4I4I4I4I4I4I4I4B``).
_HEAD = struct.Struct(">c8IB")


def script_arguments(version_counter: str, writes: list[Write]) -> tuple[list[str], list[Any]]:
    """Return the KEYS and ARGV of one ``save`` call (the layout ``save.lua`` documents).

    Example:
        ```python
        keys, args = script_arguments(db.keys.version_counter("ticket"), [write])
        ```
    """
    keys: list[str] = [version_counter]
    args: list[Any] = []
    for w in writes:
        n_lists = len(w.lists) + len(w.hashes)
        args += [
            _HEAD.pack(
                w.mode.encode(),
                *(len(w.hset), len(w.hdel), len(w.zrem), len(w.zadd), len(w.claims)),
                *(len(w.releases), n_lists, len(w.absent)),
                (w.counter is not None) + 2 * (w.clock is not None),
            ),
            w.expected,
            w.record.id,
        ]
        keys += [w.key, *w.zrem, *w.zadd]
        for pair in w.hset.items():
            args += pair
        args += w.hdel
        args += [SEQ if k in w.seq_scored else repr(s) for k, s in w.zadd.items()]
        for key, value, _field in w.claims:
            keys.append(key)
            args.append(value)
        for key, value in w.releases:
            keys.append(key)
            args.append(value)
        for key, elements in w.lists.items():
            keys.append(key)
            args += ["l", len(elements), *elements]
        for key, fields in w.hashes.items():
            keys.append(key)
            args += ["h", 2 * len(fields)]
            for pair in fields.items():
                args += pair
        keys += w.absent
        if w.counter is not None:
            keys.append(w.counter[0])
            args.append(w.counter[1])
        if w.clock is not None:
            args.append(w.clock)
    return keys, args


def refusal(writes: list[Write], reply: list[Any]) -> Exception | None:
    """Return the typed error a ``save`` reply stands for, or ``None`` for ``ok``.

    Raises:
        ScriptError: the reply has another shape than ``save`` answers with.

    Example:
        ```python
        error = refusal(writes, [b"conflict", 1, 7])   # ConflictError(..., found=7)
        ```
    """
    if type(reply) is list and reply[:1] == [b"ok"] and len(reply) == 1 + 2 * len(writes):
        return None  # the common answer, of its exact shape: no general check needed
    shapes = {"ok": 1 + 2 * len(writes), "conflict": 3, "guard": 3, "unique": 4}
    status, reply = checked_reply("save", reply, shapes)
    if status == "ok":
        return None
    failed = writes[int(reply[1]) - 1]
    name, record_id = type(failed.record).__name__, failed.record.id
    if status == "conflict":
        found = int(reply[2])
        if failed.expected == 0:
            return AlreadyExistsError(name, record_id, found)
        return ConflictError.stale(name, record_id, failed.expected, found)
    if status == "guard":
        return GuardError(name, record_id, failed.absent[int(reply[2]) - 1])
    _key, _value, field_name = failed.claims[int(reply[2]) - 1]  # "unique", the last status
    shown = getattr(failed.record, field_name)
    return UniqueViolationError(name, field_name, shown, reply_text(reply[3]))


async def run_writes(
    db: Database,
    writes: list[Write],
    *,
    then: Sequence[tuple[str, Sequence[Any], Sequence[Any]]] = (),
    ids_checked: bool = False,
    one_server: bool = False,
) -> list[Any]:
    """Send ``writes`` (one bucket of one collection) as one ``save`` call; raise what it
    refused.

    On success every copy takes its new version and state, and remembers ``db``.

    ``then``: scripts ``(name, keys, args)`` of the same slot run right after the save in
    one ``MULTI`` (see :meth:`Database.run_scripts`), whether or not the save was
    refused: each checks the state it acts on. Their replies are returned.

    ``ids_checked``: the caller read each new record's id in every bucket just before
    (a collection placed by ``Meta.partition_by``), or guards the write with those
    keys, so :func:`refuse_taken_ids` is not asked again.

    ``one_server``: the writes name keys of other slots on purpose (guards that one
    server checks atomically), so the slot check is not made; refused on a cluster.

    Raises:
        ConflictError: a record changed since its copy was read (``AlreadyExistsError``
            for a new record whose id is taken).
        UniqueViolationError: a ``Unique()`` value is held by another record.
        GuardError: a guard key exists.
        ConfigurationError: the writes are of records in more than one bucket.
        SchemaLayoutError: the store keeps the collection in another number of buckets.

    Example:
        ```python
        await run_writes(db, [plan_save(a, db.keys), plan_save(b, db.keys)])
        ```
    """
    refuse_duplicates([w.record for w in writes])
    if one_server and not db.batches_in_order:
        raise ConfigurationError("A write across slots needs one server, not a cluster.")
    spec = writes[0].record.__flue_spec__
    collection = spec.collection
    if spec.collection not in db.checked_buckets:  # once per database
        await check_collections(db, [spec])
    if spec.directed and not ids_checked:
        await refuse_taken_ids(db, [w.record for w in writes if w.mode == "s" and not w.expected])
    keys, args = script_arguments(one_bucket(db.keys, writes).version_counter(collection), writes)
    operation = "delete" if all(w.mode == "d" for w in writes) else "save"
    batch = {"db.operation.batch.size": len(writes)} if len(writes) > 1 else {}
    with db.client.span(operation, collection, **batch):
        if then:
            reply, *after = await db.run_scripts([("save", keys, args), *then])
        else:  # Scripts.call, without its calls: the script by name, then the client
            scripts = db.scripts
            if scripts.check_slots and not one_server:
                one_slot("save", keys)
            script = scripts.loaded.get("save") or scripts.get("save")
            reply, after = await db.client.run_script(script, keys, args), []
        error = refusal(writes, reply)
        if error is not None:
            landed = await own_write(db, writes) if isinstance(error, AlreadyExistsError) else None
            if landed is None:
                raise error
            reply = ["ok", *(n for version in landed for n in (version, 0))]
    for w, version, counted in zip(writes, reply[1::2], reply[2::2], strict=True):
        record = w.record
        if w.mode == "c":
            continue
        snapshot, entries, values = w.snapshot, w.entries, w.values
        if w.counter is not None or w.clock is not None:  # a value the script gave
            snapshot, entries, values = counted_state(w, int(counted))
            for name in (w.counter[1] if w.counter else None, w.clock):
                if name is not None:
                    object.__setattr__(record, name, values[name])
        record._keep_held(Held(int(version), snapshot, entries, w.unique, db, values))
    return after


def counted_state(
    write: Write, counted: int
) -> tuple[dict[str, bytes], dict[str, float], dict[str, Any]]:
    """What a save with a counter or clock field left in the store once the script gave
    the field ``counted`` (a clock's: microseconds since the epoch; with both, the
    counter's value and the time it reads as): the planned state with ``#seq`` replaced,
    as the script replaced it (the fields' bytes, the scores of ``seq_scored``,
    ``_owned``'s ``@#seq``).

    Example:
        ```python
        snapshot, entries, values = counted_state(write, 1767225642000123)
        ```
    """
    codecs = write.record.__flue_spec__.codecs
    stamped: dict[str, Any] = {}
    if write.counter is not None:
        stamped[write.counter[1]] = counted
    if write.clock is not None:
        stamped[write.clock] = EPOCH + dt.timedelta(microseconds=counted)
    name, value = next(iter(stamped.items()))  # the one that scores: the counter's first
    score = codecs[name].score(value)
    snapshot = {
        **write.snapshot,
        **{field: codecs[field].encode(v) for field, v in stamped.items()},
        OWNED_FIELD: owned_scored(write.snapshot[OWNED_FIELD], score),
    }
    entries = {k: score if k in write.seq_scored else s for k, s in write.entries.items()}
    return snapshot, entries, {**write.values, **stamped}


async def own_write(db: Database, writes: list[Write]) -> list[int] | None:
    """The stored versions of ``writes`` if each row holds exactly what its write sent:
    a new record whose reply was lost, retried by the client, meets itself (or an equal
    record, which is the same state); ``None`` otherwise. Plain saves only (no counter,
    no owned keys: those are not in the row to compare).

    Example:
        ```python
        versions = await own_write(db, writes)   # [7] after a lost reply, else None
        ```
    """
    plain = all(
        w.mode == "s" and w.counter is None and w.clock is None and not w.lists and not w.hashes
        for w in writes
    )
    if not plain:
        return None
    rows = await db.run_batch([("HGETALL", w.key) for w in writes])
    versions: list[int] = []
    for w, raw in zip(writes, rows, strict=True):
        stored = {reply_text(k): v for k, v in reply_hash(raw).items()}
        version = stored.pop("version", b"")
        if not version.isdigit() or stored != w.snapshot:
            return None
        versions.append(int(version))
    return versions


async def refuse_taken_ids(db: Database, records: Sequence[Model]) -> None:
    """Refuse new records of a collection placed by ``Meta.partition_by`` whose id a
    record of another partition holds (one round trip; the record's own bucket is
    checked by the write itself).

    Two creates of one id in two partitions at the same moment can both pass; a read by
    that id then raises :class:`~flue_models.model.errors.CorruptDataError`.

    Raises:
        AlreadyExistsError: naming the record and the partition that holds its id.

    Example:
        ```python
        await refuse_taken_ids(db, [Order(id="o-1", tenant="globex")])   # AlreadyExistsError
        ```
    """
    if not records:
        return
    spec = records[0].__flue_spec__
    own = [spec.keys_for(db.keys, r).record(spec.collection, r.id) for r in records]
    wanted = [
        (record, key)
        for record, home in zip(records, own, strict=True)
        for key in spec.candidate_keys(db.keys, record.id)
        if key != home
    ]
    found = await db.run_batch([("HGET", key, spec.partition_by) for _record, key in wanted])
    for (record, _key), value in zip(wanted, found, strict=True):
        if value is not None:
            name = type(record).__name__
            raise AlreadyExistsError.claimed(name, record.id, spec.partition_by, reply_text(value))


def one_bucket(keys: KeySpace, writes: Sequence[Write]) -> KeySpace:
    """Return the key space of the one bucket every record of ``writes`` is in.

    Raises:
        ConfigurationError: the records are in more than one bucket (one script call
            touches one bucket; ``save_many`` groups records by bucket).

    Example:
        ```python
        one_bucket(db.keys, [plan_save(a, db.keys)]).version_counter("ticket")
        ```
    """
    spec = writes[0].record.__flue_spec__
    if len(writes) == 1:
        return spec.keys_for(keys, writes[0].record)
    found = {spec.keys_for(keys, w.record).bucket for w in writes}
    if len(found) > 1:
        raise ConfigurationError(
            f"One atomic write touches one bucket; these records of {spec.model_name} are in "
            f"buckets {sorted(found)}. Nothing was written."
        )
    return keys.in_bucket(found.pop())


def refuse_duplicates(records: Sequence[Model]) -> None:
    """Refuse a batch that writes one record twice (by collection and id).

    Raises:
        ConfigurationError: naming the record.

    Example:
        ```python
        refuse_duplicates([ticket, other_copy_of_ticket])   # ConfigurationError
        ```
    """
    if len(records) < 2:
        return
    seen: set[tuple[str, str]] = set()
    for record in records:
        identity = (record.__flue_spec__.collection, record.id)
        if identity in seen:
            raise ConfigurationError(
                f"save_many got {type(record).__name__} {record.id!r} twice; nothing was "
                "written. Merge the changes into one copy, or save the copies one after the "
                "other (both would pass the version check, and one update would be lost)."
            )
        seen.add(identity)


#: The conflicts :func:`retry_on_conflict` runs its step again for: another writer got
#: there first (a stale copy, or a record created meanwhile). Every other refusal (every
#: subclass of ``ConflictError`` is one) is raised at once.
RETRIED_CONFLICTS = (ConflictError, AlreadyExistsError)


async def retry_on_conflict(step: Callable[[], Awaitable[R]], *, attempts: int = MAX_ATTEMPTS) -> R:
    """Run ``step`` (read, decide, write) again each time its write raises a conflict.

    The one compare-and-set loop of the library: ``step`` reads fresh state, decides,
    and writes under the version check; a stale copy (:meth:`ConflictError.stale`) or an
    :class:`AlreadyExistsError` means another writer got there first, so it runs again on
    what that writer left. Other refusals (a unique value, a guard, a closed stream...)
    are raised at once.

    Raises:
        ConflictError: ``attempts`` writers in a row got there first (the last conflict).

    Example:
        ```python
        async def close_ticket() -> bool:
            ticket = await Ticket.get("t-1")
            if ticket is None:
                return False
            await ticket.update(status="closed")
            return True

        closed = await retry_on_conflict(close_ticket)
        ```
    """
    for _attempt in range(attempts - 1):
        try:
            return await step()
        except ConflictError as exc:
            if type(exc) not in RETRIED_CONFLICTS:
                raise  # a refusal a fresh read would not change (a unique value, a guard)
            continue  # another writer got there first: read again and decide again
    return await step()
