"""The ``Model`` base class: declaration, reads, and atomic writes with version checks.

Every write (save, update, create, delete, save_many) goes through the one write path in
:mod:`flue_models.model.writes`: one call of the ``save`` Lua script, which checks each
record's version and unique claims and only then changes the hash and every index
entry, so no reader and no crash ever sees one without the other.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic._internal._model_construction import ModelMetaclass
from redis.exceptions import NoPermissionError, ResponseError

from flue_models.connection import CURRENT_DATABASE, Database, pick_database
from flue_models.errors import (
    AlreadyExistsError,
    CommandError,
    ConfigurationError,
    CorruptDataError,
    DecodeError,
)
from flue_models.keys import KeySpace
from flue_models.model.buckets import check_collections
from flue_models.model.expressions import AllOf, AnyOf, Condition, FieldRef
from flue_models.model.fields import new_id
from flue_models.model.spec import (
    OWNED_FIELD,
    VERSION_FIELD,
    ModelSpec,
    build_spec,
    check_meta_options,
    decode_owned,
)
from flue_models.model.writes import (
    KEPT,
    Held,
    held,
    plan_delete,
    plan_save,
    refuse_duplicates,
    retry_on_conflict,
    run_writes,
)
from flue_models.replies import reply_hash

if typing.TYPE_CHECKING:
    from flue_models.model.query import Query

M = TypeVar("M", bound="Model")
R = TypeVar("R")

_REGISTRY: dict[str, type[Model]] = {}
#: Records per script call in ``save_many``: each call is atomic and one round trip.
SAVE_BATCH = 500
#: The hash fields every row holds besides the model's, as HGETALL names them.
_VERSION, _OWNED = VERSION_FIELD.encode(), OWNED_FIELD.encode()


def registered_specs() -> list[ModelSpec]:
    """Return the storage plan of every model class declared so far (one per collection).

    Example:
        ```python
        [spec.collection for spec in registered_specs()]   # ['session', ..., 'ticket']
        ```
    """
    return [model.__flue_spec__ for model in _REGISTRY.values()]


def registered_model(collection: str) -> type[Model] | None:
    """Return the model class declared on ``collection`` so far, if any.

    Example:
        ```python
        registered_model("ticket")   # <class 'myapp.models.Ticket'>
        ```
    """
    return _REGISTRY.get(collection)


def _pick(db: Database | None, own: Database | None = None) -> Database:
    """The database of an operation, as :func:`pick_database` chooses it; its common case
    (none named: the record's own, else the enclosing ``connect()``'s) is answered here,
    so a save or a get makes no call into the connection layer for it."""
    if db is None:
        found = own if own is not None else CURRENT_DATABASE.get()
        if found is not None:
            return found
    return pick_database(db, own=own)


class _ModelMeta(ModelMetaclass):
    """Makes ``Model.<field>`` on the class a :class:`FieldRef` for building queries."""

    def __getattr__(cls, name: str) -> Any:
        spec = cls.__dict__.get("__flue_spec__")
        if spec is not None and name in spec.codecs:
            return FieldRef(cls, name, spec)
        parent = getattr(ModelMetaclass, "__getattr__", None)  # pydantic's private attributes
        if parent is not None:
            return parent(cls, name)
        raise AttributeError(name)


class Model(BaseModel, metaclass=_ModelMeta):
    """Base class of every stored model: a Pydantic model kept in a Redis hash.

    Declare a ``Meta`` with ``collection`` (the stable key-space name) and optionally
    ``order_by`` (the field that orders every index) and ``indexes`` (compound equality
    indexes). Mark queryable fields with ``Indexed()``, ``Indexed(range=True)`` or
    ``Unique()``.

    Example:
        ```python
        class Ticket(Model):
            class Meta:
                collection = "ticket"
                order_by = "created_at"
            id: str = fm.new_id()
            status: Annotated[str, Indexed()]
            priority: Annotated[int, Indexed(range=True)]
            created_at: datetime = fm.now()

        ticket = await Ticket(status="open", priority=2).save()
        ```
    """

    model_config = ConfigDict(validate_assignment=True)

    __flue_spec__: ClassVar[ModelSpec]

    id: str = new_id()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        meta = cls.__dict__.get("Meta")
        check_meta_options(cls.__name__, meta)
        if meta is not None and getattr(meta, "abstract", False):
            return
        spec = build_spec(cls.__name__, meta, dict(cls.model_fields))
        holder = _REGISTRY.get(spec.collection)
        if holder is not None and (holder.__module__, holder.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ConfigurationError(
                f"Model {cls.__name__}: collection {spec.collection!r} already belongs to "
                f"{holder.__module__}.{holder.__qualname__}; two models on one collection "
                "would read each other's records. Give each its own Meta.collection."
            )
        _REGISTRY[spec.collection] = cls
        cls.__flue_spec__ = spec

    # State -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The stored version this copy is based on (0: never saved).

        Versions come from one counter per collection: every write gives the record a
        new, larger number, and a record deleted and created again never reuses one.

        Example:
            ```python
            ticket = await Ticket(status="open", priority=1).save()
            assert ticket.version > 0
            ```
        """
        return held(self).version

    def _adopt(self, stored: Self) -> None:
        """Make this copy equal to ``stored``, a fresh read of the same record."""
        for name in type(self).model_fields:
            object.__setattr__(self, name, getattr(stored, name))
        self._keep_held(held(stored))

    def _keep_held(self, state: Held) -> None:
        """Make ``state`` what this copy holds (see :class:`Held`).

        It is kept in pydantic's dict of private values, under a name no private
        attribute can have. :class:`Model` declares no private attribute of its own:
        pydantic sets every one up on each record it builds, which would double what
        building a record costs.
        """
        private = self.__pydantic_private__
        if private is None:  # (a model without private attributes of its own)
            object.__setattr__(self, "__pydantic_private__", {KEPT: state})
        else:
            private[KEPT] = state

    def _values(self) -> dict[str, Any]:
        fields = self.__dict__  # where pydantic keeps field values (no __getattr__)
        return {name: fields[name] for name in self.__flue_spec__.codecs}

    def _database(self, db: Database | None) -> Database:
        return _pick(db, held(self).db)

    @classmethod
    def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
        """Return the keys a record owns besides its hash; they are deleted with it.

        None by default; a model that keeps, say, a list per record returns its key.

        Example:
            ```python
            class Chat(Model):
                @classmethod
                def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
                    return [keys.owned("chat", "lines", record_id)]
            ```
        """
        return []

    @classmethod
    def delete_guards(cls, keys: KeySpace, record_id: str) -> list[str]:
        """Return keys whose existence refuses a delete of the record (``GuardError``).

        None by default; ``Session`` refuses while forks of it exist.

        Example:
            ```python
            class Folder(Model):
                @classmethod
                def delete_guards(cls, keys: KeySpace, record_id: str) -> list[str]:
                    return [keys.owned("folder", "children", record_id)]
            ```
        """
        return []

    # Writes ----------------------------------------------------------------------------

    async def save(self, *, db: Database | None = None) -> Self:
        """Insert or update this record in one atomic call, and return it.

        Only fields that changed since the record was read are written; removed index
        entries are removed, new ones added. A field set to ``None`` is deleted from the
        hash and from its indexes.

        Raises:
            ConflictError: the record changed in the store since this copy was read.
            AlreadyExistsError: this is a new record and its id is taken.
            UniqueViolationError: a ``Unique()`` value is held by another record.
            ConfigurationError: ``db`` is not the database this record was read from.

        Retry after a lost reply: not blind. Read the record again and compare; a
        blind retry of a save that landed raises ``ConflictError``.

        Example:
            ```python
            ticket = await Ticket.get("t-1")
            ticket.status = "closed"
            await ticket.save()
            ```
        """
        database = self._database(db)
        await run_writes(database, [plan_save(self, database.keys)])
        return self

    async def update(self, *, db: Database | None = None, **changes: Any) -> Self:
        """Set ``changes`` on this copy and write just those fields, under the version check.

        Raises:
            ConflictError: the record changed in the store since this copy was read.

        Example:
            ```python
            await ticket.update(status="closed", priority=0)
            ```
        """
        unknown = set(changes) - set(self.__flue_spec__.codecs)
        if unknown:
            raise ConfigurationError(
                f"{type(self).__name__} has no field(s) {sorted(unknown)}; nothing was written."
            )
        before = {name: getattr(self, name) for name in changes}
        try:
            for name, value in changes.items():
                setattr(self, name, value)
            return await self.save(db=db)
        except BaseException:
            for name, value in before.items():  # leave the copy as it was before the call
                setattr(self, name, value)
            raise

    @classmethod
    async def create(cls, *, db: Database | None = None, **values: Any) -> Self:
        """Build a record from ``values`` and insert it; refuse an id that exists.

        Safe to retry: when the id exists and the stored record has exactly these values
        (a retry after a lost reply, with the same explicit ``id``), the stored record is
        returned instead of an error.

        Raises:
            AlreadyExistsError: a record with this id exists with other values.

        Example:
            ```python
            ticket = await Ticket.create(id="t-1", status="open", priority=2)
            again = await Ticket.create(id="t-1", status="open", priority=2)  # the same
            ```
        """
        record = cls(**values)
        try:
            return await record.save(db=db)
        except AlreadyExistsError:
            stored = await cls.get(record.id, db=record._database(db))
            if stored is not None and stored._values() == record._values():
                return stored
            raise

    @classmethod
    async def save_many(cls, records: Iterable[Self], *, db: Database | None = None) -> None:
        """Save many records, one round trip and one atomic script call per 500 records
        of one bucket (a collection with ``Meta.buckets`` > 1 has one call per bucket).

        Within a call, every version and unique check passes before anything is
        written; when one fails, that call writes nothing and earlier calls stay written.
        The buckets are written concurrently; when one fails the others still finish,
        and the first failure (in bucket order) is raised.

        Raises:
            ConfigurationError: two copies of one record are in ``records`` (nothing is
                written).

        Example:
            ```python
            await Ticket.save_many([Ticket(status="open", priority=p) for p in range(100)])
            ```
        """
        items = list(records)
        refuse_duplicates(items)  # across every batch, before the first is written
        databases = {id(d): d for d in (item._database(db) for item in items)}
        if len(databases) > 1:
            raise ConfigurationError(
                "save_many got records of different databases; nothing was written. Save "
                "each database's records in their own call."
            )
        if not items:
            return
        (database,) = databases.values()
        spec = cls.__flue_spec__
        by_bucket: dict[int, list[Self]] = {}
        for item in items:
            by_bucket.setdefault(spec.keys_for(database.keys, item).bucket, []).append(item)

        async def save_bucket(group: list[Self]) -> None:
            for start in range(0, len(group), SAVE_BATCH):
                batch = group[start : start + SAVE_BATCH]
                await run_writes(database, [plan_save(item, database.keys) for item in batch])

        outcomes = await asyncio.gather(
            *(save_bucket(by_bucket[b]) for b in sorted(by_bucket)), return_exceptions=True
        )
        for outcome in outcomes:  # every bucket ran; the first failure (bucket order) is raised
            if isinstance(outcome, BaseException):
                raise outcome

    async def delete(self, *, db: Database | None = None) -> bool:
        """Delete this record (its hash, index entries and owned keys) under the version check.

        Returns ``False`` for a copy that was never saved.

        Raises:
            ConflictError: the record changed in the store since this copy was read.

        Example:
            ```python
            await ticket.delete()
            ```
        """
        if held(self).version == 0:
            return False
        database = self._database(db)
        await run_writes(database, [plan_delete(self, database.keys)])
        return True

    @classmethod
    async def delete_id(cls, record_id: str, *, db: Database | None = None) -> bool:
        """Delete the record with this id, whatever its version; ``False`` if there is none.

        Safe to retry: a retry after a lost reply returns ``False``.

        Example:
            ```python
            await Ticket.delete_id("t-1")
            ```
        """
        database = _pick(db)

        async def attempt() -> bool:
            current = await cls.get(record_id, db=database)
            if current is None:
                return False
            await run_writes(database, [plan_delete(current, database.keys)])
            return True

        return await retry_on_conflict(attempt)

    # Reads -----------------------------------------------------------------------------

    @classmethod
    def from_hash(cls, key: str, raw: dict[bytes, bytes], db: Database) -> Self:
        """Build a record from its stored hash (as HGETALL returns it).

        Raises:
            DecodeError: the hash cannot be read as this model (naming key and field).

        Example:
            ```python
            ticket = Ticket.from_hash(key, reply_hash(await db.client.hgetall(key)), db)
            ```
        """
        version_text = raw.get(_VERSION)
        if version_text is None or not version_text.isdigit():
            shown = None if version_text is None else version_text.decode("utf-8", "replace")
            raise DecodeError(key, VERSION_FIELD, f"is {shown!r}, not a version number")
        data: dict[str, Any] = {}
        snapshot: dict[str, bytes] = {}
        for name, stored_name, decode in cls.__flue_spec__.readers:  # built once per model
            stored = raw.get(stored_name)
            if stored is None:
                continue
            snapshot[name] = stored
            try:
                data[name] = decode(stored)
            except ValueError as exc:  # pydantic's ValidationError and UnicodeError included
                raise DecodeError(key, name, f"holds {stored[:80]!r}: {exc}") from None
        try:  # (model_validate's own call, without its frame)
            record: Self = cls.__pydantic_validator__.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "?"
            raise DecodeError(key, where, f"is invalid: {first['msg']}") from None
        owned = raw.get(_OWNED)
        if owned is None:  # every save writes it: a row without it was not written by us
            raise DecodeError(key, OWNED_FIELD, "is missing (the index entries the row owns)")
        snapshot[OWNED_FIELD] = owned
        entries, unique = decode_owned(db.keys, key, owned)
        record._keep_held(Held(int(version_text), snapshot, entries, unique, db, data))
        return record

    @classmethod
    async def get(
        cls, record_id: str, *, partition: str | None = None, db: Database | None = None
    ) -> Self | None:
        """Return the record with this id, or ``None``; one round trip.

        ``partition``: for a model with ``Meta.partition_by``, the record's value of that
        field: the read goes to its bucket alone (without it, every bucket is asked).

        Raises:
            DecodeError: the stored hash cannot be read as this model.
            CorruptDataError: records of two partitions hold the id (give ``partition``).

        Example:
            ```python
            ticket = await Ticket.get("t-1")
            order = await Order.get("o-1", partition="acme")
            ```
        """
        database = _pick(db)
        spec = cls.__flue_spec__
        if partition is None:
            if spec.directed:  # every bucket may hold it: ask them all
                (found,) = await cls.get_many([record_id], db=database)
                return found
            key = spec.record_key(database.keys, record_id)
            if spec.collection not in database.checked_buckets:  # once per database
                await check_collections(database, [spec])
            with database.client.span("get", spec.collection):
                (raw,) = await read_hashes(database, [key])
            item = cls._from_reply(key, raw, database)
            if isinstance(item, DecodeError):
                raise item
            return item
        if spec.partition_by == "id":
            raise ConfigurationError(
                f"{cls.__name__} is placed by id (no Meta.partition_by); read it by id alone."
            )
        key = spec.keys_of(database.keys, partition).record(spec.collection, record_id)
        if spec.collection not in database.checked_buckets:  # once per database
            await check_collections(database, [spec])
        with database.client.span("get", spec.collection):
            (item,) = await cls._read_keys([key], database)
        if isinstance(item, DecodeError):
            raise item
        if item is not None and spec.partition_of(item) != partition:
            return None  # in the bucket the value hashes to, but of another partition
        return item

    @classmethod
    async def get_many(
        cls, record_ids: Sequence[str], *, db: Database | None = None
    ) -> list[Self | None]:
        """Return the records with these ids, in order (``None`` where absent); one round trip.

        Raises:
            DecodeError: a stored record cannot be read as this model, or its key holds
                another type than a hash (naming the key and the field).

        Example:
            ```python
            first, second = await Ticket.get_many(["t-1", "t-2"])
            ```
        """
        found = await cls.read_records(record_ids, db=db)
        for item in found:
            if isinstance(item, DecodeError):
                raise item
        return [item for item in found if not isinstance(item, DecodeError)]

    @classmethod
    async def read_records(
        cls, record_ids: Sequence[str], *, db: Database | None = None
    ) -> list[Self | DecodeError | None]:
        """Read records in one round trip; a record that cannot be read comes back as the
        :class:`DecodeError` saying why, in its place, so one bad row never hides the rest.

        Example:
            ```python
            for item in await Ticket.read_records(ids):
                if isinstance(item, DecodeError):
                    log.warning("skipping %s", item)
            ```
        """
        database = _pick(db)
        spec = cls.__flue_spec__
        candidates = [spec.candidate_keys(database.keys, record_id) for record_id in record_ids]
        keys = [key for each in candidates for key in each]
        if not keys:
            return []
        if spec.collection not in database.checked_buckets:  # once per database
            await check_collections(database, [spec])
        size = {"db.operation.batch.size": len(record_ids)}
        with database.client.span("get", spec.collection, **size):
            replies = await read_hashes(database, keys)
        held = held_once(cls.__name__, record_ids, candidates, replies)
        return [None if h is None else cls._from_reply(*h, database) for h in held]

    @classmethod
    async def _read_keys(cls, keys: Sequence[str], db: Database) -> list[Self | DecodeError | None]:
        """Read records by their hash keys in one round trip, as :meth:`read_records` does
        by id (a query knows the bucket each id it found is in)."""
        return cls._from_replies(keys, await read_hashes(db, keys), db)

    @classmethod
    def _from_replies(
        cls, keys: Sequence[str], replies: Sequence[dict[bytes, bytes] | Exception], db: Database
    ) -> list[Self | DecodeError | None]:
        """Records from the hashes read at ``keys`` (see :meth:`_from_reply`)."""
        return [cls._from_reply(key, raw, db) for key, raw in zip(keys, replies, strict=True)]

    @classmethod
    def _from_reply(
        cls, key: str, raw: dict[bytes, bytes] | Exception, db: Database
    ) -> Self | DecodeError | None:
        """A record from what :func:`read_hashes` read, or why it cannot be one."""
        if isinstance(raw, Exception):
            return DecodeError(key, "(the key)", f"cannot be read as a hash: {raw}")
        if not raw:
            return None
        try:
            return cls.from_hash(key, raw, db)
        except DecodeError as exc:
            return exc

    @classmethod
    def find(cls, *conditions: Condition | AllOf | AnyOf | bool) -> Query[Self]:
        """Start a query: records matching every condition, in ``order_by`` order.

        Example:
            ```python
            page = await (Ticket.find(Ticket.status == "open", Ticket.priority >= 2)
                          .sort_by("-created_at").page(limit=20))
            ```
        """
        from flue_models.model.query import Query

        return Query(cls).where(*conditions)

    @classmethod
    def using(cls, db: Database) -> Bound[Self]:
        """Return this model bound to ``db`` instead of the enclosing ``connect()``.

        Example:
            ```python
            other = await fm.connect(key_prefix="tenant-b")
            ticket = await Ticket.using(other).get("t-1")
            ```
        """
        return Bound(cls, db)


class Bound(Generic[M]):
    """A model bound to one database: the class-level API with ``db`` filled in.

    Example:
        ```python
        tickets = Ticket.using(db)
        await tickets.create(status="open", priority=1)
        page = await tickets.find(Ticket.status == "open").page(limit=10)
        ```
    """

    def __init__(self, model: type[M], db: Database) -> None:
        self.model = model
        self.db = db

    async def get(self, record_id: str, *, partition: str | None = None) -> M | None:
        """See :meth:`Model.get`."""
        return await self.model.get(record_id, partition=partition, db=self.db)

    async def get_many(self, record_ids: Sequence[str]) -> list[M | None]:
        """See :meth:`Model.get_many`."""
        return await self.model.get_many(record_ids, db=self.db)

    async def create(self, **values: Any) -> M:
        """See :meth:`Model.create`."""
        return await self.model.create(db=self.db, **values)

    async def save(self, record: M) -> M:
        """Save ``record`` into this database. See :meth:`Model.save`."""
        return await record.save(db=self.db)

    async def save_many(self, records: Iterable[M]) -> None:
        """See :meth:`Model.save_many`."""
        await self.model.save_many(records, db=self.db)

    async def delete_id(self, record_id: str) -> bool:
        """Delete by id; ``False`` when there was nothing to delete.

        Example:
            ```python
            await Ticket.using(db).delete_id("t-1")
            ```
        """
        return await self.model.delete_id(record_id, db=self.db)

    def find(self, *conditions: Condition | AllOf | AnyOf | bool) -> Query[M]:
        """See :meth:`Model.find`."""
        return self.model.find(*conditions).using(self.db)


async def read_hashes(db: Database, keys: Sequence[str]) -> list[dict[bytes, bytes] | Exception]:
    """HGETALL each key in one round trip: its fields (``{}`` when absent), or in place
    the error of a key that is not a hash.

    The one reader of record hashes: ``get``, ``get_many``, ``read_records``,
    :func:`iter_hashes` and verification go through it.

    Example:
        ```python
        for key, raw in zip(keys, await read_hashes(db, keys)):
            if isinstance(raw, Exception):
                ...   # a string where a record should be
        ```
    """
    if len(keys) == 1:  # one command: no batch to build (a get)
        try:
            raw = await db.client.execute_command("HGETALL", keys[0])
        except CommandError as exc:  # in its place, as a batch returns it
            cause = exc.__cause__
            if not isinstance(cause, ResponseError) or isinstance(cause, NoPermissionError):
                raise
            return [cause]
        return [raw if isinstance(raw, dict) else reply_hash(raw)]
    replies = await db.run_batch([("HGETALL", key) for key in keys], return_errors=True)
    return [raw if isinstance(raw, dict | Exception) else reply_hash(raw) for raw in replies]


def held_once(
    model: str, record_ids: Sequence[str], candidates: Sequence[Sequence[str]], replies: Sequence[R]
) -> list[tuple[str, R] | None]:
    """Pick, for each id, the one of its candidate keys that holds something (a truthy
    reply), from the replies of every candidate key in order; ``None`` where none does.

    The one place a read by id that asks several buckets (a collection placed by
    ``Meta.partition_by``) decides what it found.

    Raises:
        CorruptDataError: two candidate keys of one id hold something.

    Example:
        >>> held_once("Order", ["o-1"], [["a", "b"]], [{}, {b"id": b"o-1"}])
        [('b', {b'id': b'o-1'})]
    """
    found: list[tuple[str, R] | None] = []
    answers = iter(replies)
    for record_id, keys in zip(record_ids, candidates, strict=True):
        held = [(key, reply) for key in keys if (reply := next(answers))]
        if len(held) > 1:
            raise CorruptDataError.ambiguous_id(model, record_id, [key for key, _reply in held])
        found.append(held[0] if held else None)
    return found


async def iter_hashes(
    db: Database, keys: Sequence[str], chunk: int = 500
) -> AsyncIterator[list[tuple[str, dict[bytes, bytes] | Exception]]]:
    """Read record hashes ``chunk`` at a time (one round trip each), skipping vanished
    ones; a key that is not a hash comes with its error (for verification to report).

    The one chunked loader of maintenance paths (verification, index rebuilds).

    Example:
        ```python
        async for batch in iter_hashes(db, record_keys):
            records = [Ticket.from_hash(k, raw, db) for k, raw in batch if isinstance(raw, dict)]
        ```
    """
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        found = await read_hashes(db, part)
        yield [(key, raw) for key, raw in zip(part, found, strict=True) if raw]
