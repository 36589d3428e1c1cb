"""The ``Model`` base class: declaration, reads, and atomic writes with version checks.

Every write (save, update, create, delete, save_many) is one call of the ``save`` Lua
script, which checks each record's version and unique claims and only then changes the
hash and every index entry, so no reader and no crash ever sees one without the other.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic._internal._model_construction import ModelMetaclass

from flue_models.connection import Database, current_database
from flue_models.errors import ConfigurationError
from flue_models.keys import KeySpace
from flue_models.model.errors import (
    AlreadyExistsError,
    ConflictError,
    DecodeError,
    GuardError,
    UniqueViolationError,
)
from flue_models.model.expressions import AllOf, Condition, FieldRef
from flue_models.model.spec import VERSION_FIELD, ModelSpec, build_spec
from flue_models.replies import reply_hash

if typing.TYPE_CHECKING:
    from flue_models.model.query import Query

M = TypeVar("M", bound="Model")

_REGISTRY: dict[str, type[Model]] = {}
#: Records per script call in ``save_many``: each call is atomic and one round trip.
SAVE_BATCH = 500


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


@dataclass
class _Write:
    """One record's part of a ``save`` script call, and the state to keep once it lands."""

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
    absent: list[str] = field(default_factory=list)
    snapshot: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, float] = field(default_factory=dict)
    unique: dict[str, bytes] = field(default_factory=dict)


R = TypeVar("R")


class DualMethod(Generic[R]):
    """A method with two forms: ``obj.name(...)`` on a record, ``Model.name(id, ...)`` by id.

    Each form is an ordinary async method of the class, named by ``on_record`` and
    ``on_class``.

    Example:
        ```python
        class Ticket(Model):
            delete: ClassVar[DualMethod[bool]] = DualMethod("_delete_self", "_delete_id")
        await ticket.delete()          # this record
        await Ticket.delete("t-1")     # by id
        ```
    """

    def __init__(self, on_record: str, on_class: str) -> None:
        self.on_record = on_record
        self.on_class = on_class

    def __get__(
        self, instance: object | None, owner: type[Any]
    ) -> Callable[..., Coroutine[Any, Any, R]]:
        if instance is None:
            method: Callable[..., Coroutine[Any, Any, R]] = getattr(owner, self.on_class)
        else:
            method = getattr(instance, self.on_record)
        return method


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

    _flue_version: int = PrivateAttr(default=0)
    _flue_snapshot: dict[str, bytes] = PrivateAttr(default_factory=dict)
    _flue_entries: dict[str, float] = PrivateAttr(default_factory=dict)
    _flue_unique: dict[str, bytes] = PrivateAttr(default_factory=dict)
    _flue_db: Database | None = PrivateAttr(default=None)

    #: ``await record.delete()``, or ``await Model.delete(id)``; both return whether a
    #: record was deleted.
    delete: ClassVar[DualMethod[bool]] = DualMethod("_delete_self", "_delete_id")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        meta = cls.__dict__.get("Meta")
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
        return self._flue_version

    def _adopt(self, stored: Self) -> None:
        """Make this copy equal to ``stored``, a fresh read of the same record."""
        for name in type(self).model_fields:
            object.__setattr__(self, name, getattr(stored, name))
        self._flue_version = stored._flue_version
        self._flue_snapshot = stored._flue_snapshot
        self._flue_entries = stored._flue_entries
        self._flue_unique = stored._flue_unique
        self._flue_db = stored._flue_db

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__flue_spec__.codecs}

    def _database(self, db: Database | None) -> Database:
        return db or self._flue_db or current_database()

    # Writes ----------------------------------------------------------------------------

    def _plan_save(self, keys: KeySpace) -> _Write:
        spec = self.__flue_spec__
        values = self._values()
        encoded = {
            name: spec.codecs[name].encode(value)
            for name, value in values.items()
            if value is not None
        }
        entries = spec.entries(keys, values)
        unique = spec.unique_claims(keys, values)
        # Read the private state once: each access goes through pydantic's __getattr__.
        old_entries, old_unique = self._flue_entries, self._flue_unique
        stored = self._flue_snapshot
        return _Write(
            record=self,
            mode="s",
            key=keys.record(spec.collection, self.id),
            expected=self._flue_version,
            hset={k: v for k, v in encoded.items() if stored.get(k) != v},
            hdel=[k for k in stored if k not in encoded],
            zrem=[k for k in old_entries if k not in entries],
            zadd={k: s for k, s in entries.items() if old_entries.get(k) != s},
            claims=[
                (k, v, spec.unique_field(k)) for k, v in unique.items() if old_unique.get(k) != v
            ],
            releases=[(k, v) for k, v in old_unique.items() if unique.get(k) != v],
            snapshot=encoded,
            entries=entries,
            unique=unique,
        )

    def _plan_delete(self, keys: KeySpace) -> _Write:
        spec = self.__flue_spec__
        return _Write(
            record=self,
            mode="d",
            key=keys.record(spec.collection, self.id),
            expected=self._flue_version,
            zrem=list(self._flue_entries),
            releases=list(self._flue_unique.items()),
        )

    async def save(self, *, db: Database | None = None) -> Self:
        """Insert or update this record in one atomic call, and return it.

        Only fields that changed since the record was read are written; removed index
        entries are removed, new ones added. A field set to ``None`` is deleted from the
        hash and from its indexes.

        Raises:
            ConflictError: the record changed in the store since this copy was read.
            AlreadyExistsError: this is a new record and its id is taken.
            UniqueViolationError: a ``Unique()`` value is held by another record.

        Example:
            ```python
            ticket = await Ticket.get("t-1")
            ticket.status = "closed"
            await ticket.save()
            ```
        """
        database = self._database(db)
        await _run_writes(database, [self._plan_save(database.keys)])
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

        Raises:
            AlreadyExistsError: a record with this id exists.

        Example:
            ```python
            ticket = await Ticket.create(status="open", priority=2)
            ```
        """
        return await cls(**values).save(db=db)

    @classmethod
    async def save_many(cls, records: Iterable[Self], *, db: Database | None = None) -> None:
        """Save many records, one round trip and one atomic script call per 500 records.

        Within a call, every version and unique check passes before anything is
        written; when one fails, that call writes nothing and earlier calls stay written.

        Example:
            ```python
            await Ticket.save_many([Ticket(status="open", priority=p) for p in range(100)])
            ```
        """
        database = db or current_database()
        items = list(records)
        for start in range(0, len(items), SAVE_BATCH):
            batch = items[start : start + SAVE_BATCH]
            await _run_writes(database, [item._plan_save(database.keys) for item in batch])

    async def _delete_self(self, *, db: Database | None = None) -> bool:
        if self._flue_version == 0:
            return False
        database = self._database(db)
        await _run_writes(database, [self._plan_delete(database.keys)])
        return True

    @classmethod
    async def _delete_id(cls, record_id: str, *, db: Database | None = None) -> bool:
        database = db or current_database()
        conflict: ConflictError | None = None
        for _attempt in range(20):
            current = await cls.get(record_id, db=database)
            if current is None:
                return False
            try:
                await _run_writes(database, [current._plan_delete(database.keys)])
            except ConflictError as exc:
                conflict = exc  # changed between our read and our delete: read again
                continue
            return True
        assert conflict is not None
        raise conflict  # 20 writers in a row got there first: give up, saying so

    # Reads -----------------------------------------------------------------------------

    @classmethod
    def _from_hash(cls, key: str, raw: dict[bytes, bytes], db: Database) -> Self:
        spec = cls.__flue_spec__
        fields = {k.decode(): v for k, v in raw.items()}
        version_text = fields.pop(VERSION_FIELD, None)
        if version_text is None or not version_text.isdigit():
            raise DecodeError(key, VERSION_FIELD, f"is {version_text!r}, not a version number")
        data: dict[str, Any] = {}
        snapshot: dict[str, bytes] = {}
        for name, codec in spec.codecs.items():
            stored = fields.get(name)
            if stored is None:
                continue
            snapshot[name] = stored
            try:
                data[name] = codec.decode(stored)
            except (ValueError, ValidationError) as exc:
                raise DecodeError(key, name, f"holds {stored[:80]!r}: {exc}") from None
        try:
            record = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "?"
            raise DecodeError(key, where, f"is invalid: {first['msg']}") from None
        record._flue_version = int(version_text)
        record._flue_snapshot = snapshot
        values = record._values()
        record._flue_entries = spec.entries(db.keys, values)
        record._flue_unique = spec.unique_claims(db.keys, values)
        record._flue_db = db
        return record

    @classmethod
    async def get(cls, record_id: str, *, db: Database | None = None) -> Self | None:
        """Return the record with this id, or ``None``; one round trip.

        Raises:
            DecodeError: the stored hash cannot be read as this model.

        Example:
            ```python
            ticket = await Ticket.get("t-1")
            ```
        """
        database = db or current_database()
        key = database.keys.record(cls.__flue_spec__.collection, record_id)
        raw = await database.client.hgetall(key)
        return cls._from_hash(key, reply_hash(raw), database) if raw else None

    @classmethod
    async def get_many(
        cls, record_ids: Sequence[str], *, db: Database | None = None
    ) -> list[Self | None]:
        """Return the records with these ids, in order (``None`` where absent); one round trip.

        Example:
            ```python
            first, second = await Ticket.get_many(["t-1", "t-2"])
            ```
        """
        database = db or current_database()
        collection = cls.__flue_spec__.collection
        keys = [database.keys.record(collection, record_id) for record_id in record_ids]
        if not keys:
            return []
        replies = await database.run_batch([("HGETALL", key) for key in keys])
        return [
            cls._from_hash(key, reply_hash(raw), database) if raw else None
            for key, raw in zip(keys, replies, strict=True)
        ]

    @classmethod
    def find(cls, *conditions: Condition | AllOf | bool) -> Query[Self]:
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

    async def get(self, record_id: str) -> M | None:
        """See :meth:`Model.get`."""
        return await self.model.get(record_id, db=self.db)

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

    async def delete(self, record_id: str) -> bool:
        """Delete by id; ``False`` when there was nothing to delete.

        Example:
            ```python
            await Ticket.using(db).delete("t-1")
            ```
        """
        return await self.model._delete_id(record_id, db=self.db)

    def find(self, *conditions: Condition | AllOf | bool) -> Query[M]:
        """See :meth:`Model.find`."""
        return self.model.find(*conditions).using(self.db)


async def _run_writes(db: Database, writes: list[_Write]) -> None:
    """Send writes as one ``save`` script call; raise what it refused, else sync the copies."""
    collection = writes[0].record.__flue_spec__.collection
    keys: list[str] = [db.keys.version_counter(collection)]
    args: list[Any] = [len(writes)]
    for w in writes:
        keys.append(w.key)
        args += [w.mode, w.record.id, w.expected, len(w.hset)]
        for name, value in w.hset.items():
            args += [name, value]
        args += [len(w.hdel), *w.hdel, len(w.zrem)]
        keys += w.zrem
        args.append(len(w.zadd))
        for key, score in w.zadd.items():
            keys.append(key)
            args.append(repr(score))
        args.append(len(w.claims))
        for key, value, _field in w.claims:
            keys.append(key)
            args.append(value)
        args.append(len(w.releases))
        for key, value in w.releases:
            keys.append(key)
            args.append(value)
        args.append(len(w.lists))
        for key, elements in w.lists.items():
            keys.append(key)
            args += [len(elements), *elements]
        args.append(len(w.absent))
        keys += w.absent
    reply = await db.scripts.call("save", keys=keys, args=args)
    status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
    if status == "conflict":
        failed = writes[int(reply[1]) - 1]
        name, record_id, found = type(failed.record).__name__, failed.record.id, int(reply[2])
        if failed.expected == 0:
            raise AlreadyExistsError(name, record_id, found)
        raise ConflictError(name, record_id, failed.expected, found)
    if status == "guard":
        failed = writes[int(reply[1]) - 1]
        raise GuardError(
            type(failed.record).__name__, failed.record.id, failed.absent[int(reply[2]) - 1]
        )
    if status == "unique":
        failed = writes[int(reply[1]) - 1]
        _key, value, field_name = failed.claims[int(reply[2]) - 1]
        holder = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
        shown = getattr(failed.record, field_name)
        raise UniqueViolationError(type(failed.record).__name__, field_name, shown, holder)
    for w, version in zip(writes, reply[1:], strict=True):
        record = w.record
        record._flue_version = int(version)
        record._flue_snapshot = w.snapshot
        record._flue_entries = w.entries
        record._flue_unique = w.unique
        record._flue_db = db
