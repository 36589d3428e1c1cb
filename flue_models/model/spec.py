"""A model's storage plan: its codecs, its indexes, and the index entries of a record.

Built once per class when the class is created; every check that can fail at
declaration time fails here, with a message naming the model and the field.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

from flue_models.errors import ConfigurationError, DecodeError
from flue_models.keys import (
    MAX_BUCKETS,
    SEPARATOR,
    KeySpace,
    bucket_of,
    check_collection,
    decode_segment,
    encode_segment,
    is_bucket_count,
)
from flue_models.model.codec import MAX_EXACT_INT, RANGE_KINDS, FieldCodec, codec_for
from flue_models.model.fields import Indexed, Unique

#: Hash field holding a record's version; no model field may use the name.
VERSION_FIELD = "version"
#: Hash field listing the index entries and unique claims a record owns (a leading
#: ``_`` keeps it apart from every Pydantic field name).
OWNED_FIELD = "_owned"
#: Equality keys of finite-domain values kept per spec (key spaces x fields x values).
DOMAIN_KEYS = 4096
#: The options a model's ``Meta`` may set.
META_OPTIONS = frozenset(
    {"abstract", "collection", "order_by", "indexes", "buckets", "partition_by"}
)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the storage layer needs to know about one model class.

    Attributes:
        collection: the stable key-space name from ``Meta.collection``.
        order_by: the field whose score orders every index (``None``: ids order them).
        codecs: one codec per field.
        equality_fields: fields with an equality index set per value.
        range_fields: fields queryable by range (their own scored set; ``order_by`` uses
            the collection's ``all`` set).
        unique_fields: fields whose values are claimed in a ``uniq`` hash.
        compound: compound equality indexes, each a tuple of field names.
        buckets: how many buckets the records are spread over (``Meta.buckets``); each
            bucket has its own hash tag, so on a cluster its own slot.
        partition_by: the field whose value picks a record's bucket (``Meta.partition_by``,
            ``"id"`` by default): records with one value share a bucket, so a query that
            fixes it reads one bucket.

    Example:
        ```python
        Ticket.__flue_spec__.equality_fields   # frozenset({'status'})
        ```
    """

    model_name: str
    collection: str
    order_by: str | None
    codecs: dict[str, FieldCodec]
    equality_fields: frozenset[str]
    range_fields: frozenset[str]
    unique_fields: frozenset[str]
    compound: tuple[tuple[str, ...], ...]
    buckets: int = 1
    partition_by: str = "id"
    _domain_keys: dict[tuple[str, int, str, Any], str] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )
    _domain_sets: dict[tuple[str, int], list[str]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    @functools.cached_property
    def writers(self) -> tuple[tuple[str, Callable[[Any], bytes]], ...]:
        """Per field: its name and its encoder (see :meth:`FieldCodec.encoder`), built
        once per model for the write path.

        Example:
            ```python
            dict(Ticket.__flue_spec__.writers)["priority"](3)   # b'3'
            ```
        """
        return tuple((name, codec.encoder) for name, codec in self.codecs.items())

    @functools.cached_property
    def readers(self) -> tuple[tuple[str, bytes, Callable[[bytes], Any]], ...]:
        """Per field: its name, the name as a stored hash field, and its decoder (see
        :meth:`FieldCodec.decoder`), built once per model for the read path.

        Example:
            ```python
            [name for name, _raw, _decode in Ticket.__flue_spec__.readers]   # ['id', ...]
            ```
        """
        return tuple((name, name.encode(), codec.decoder) for name, codec in self.codecs.items())

    @functools.cached_property
    def keyed_by(self) -> tuple[str, ...]:
        """The fields whose values name the index sets a record is in (not their scores):
        equality, compound and range fields (a range set is one key, there or not).

        Example:
            ```python
            Ticket.__flue_spec__.keyed_by   # ('owner', 'priority', 'status')
            ```
        """
        named = self.equality_fields | self.range_fields | {f for c in self.compound for f in c}
        return tuple(sorted(named - {self.order_by}))

    # Key names -------------------------------------------------------------------------

    @property
    def directed(self) -> bool:
        """Whether an id alone does not name a record's bucket: the collection is spread
        over more than one bucket by another field than ``id`` (``Meta.partition_by``),
        so a read by id alone looks in every bucket.

        Example:
            ```python
            Order.__flue_spec__.directed   # True: Meta.partition_by = "tenant", buckets = 16
            ```
        """
        return self.buckets > 1 and self.partition_by != "id"

    def partition_of(self, record: Any) -> str:
        """Return the partition value of a record (a model instance): its ``partition_by``
        field (its id by default).

        Example:
            ```python
            Order.__flue_spec__.partition_of(order)   # 'acme'
            ```
        """
        value = getattr(record, self.partition_by)
        assert isinstance(value, str), (self.model_name, self.partition_by)
        return value

    def keys_of(self, keys: KeySpace, partition: str) -> KeySpace:
        """Return the key space of the bucket of the records whose partition value is
        ``partition`` (their id, unless ``Meta.partition_by`` names another field).

        Example:
            ```python
            spec.keys_of(db.keys, "t-2").all(spec.collection)   # 'flue::{ticket:3}:all'
            ```
        """
        if self.buckets == 1:
            return keys
        return keys.in_bucket(bucket_of(partition, self.buckets))

    def keys_for(self, keys: KeySpace, record: Any) -> KeySpace:
        """Return the key space of the bucket ``record`` (a model instance) is in.

        Example:
            ```python
            spec.keys_for(db.keys, order).record(spec.collection, order.id)
            ```
        """
        if self.buckets == 1:  # (keys_of's answer, without reading the partition value)
            return keys
        return self.keys_of(keys, self.partition_of(record))

    def record_key(self, keys: KeySpace, record_id: str, partition: str | None = None) -> str:
        """Return the hash key of the record with ``record_id``, in its bucket.

        ``partition``: the record's partition value; needed when the id alone does not
        name the bucket (:attr:`directed`).

        Example:
            ```python
            spec.record_key(db.keys, "t-2")   # 'flue::{ticket:3}:dC0y'
            ```
        """
        return self._keys_by_id(keys, record_id, partition).record(self.collection, record_id)

    def owned_key(self, keys: KeySpace, name: str, record_id: str) -> str:
        """Return the key ``name`` the record with ``record_id`` owns, in its bucket (of a
        collection placed by id: see :meth:`record_key`).

        Example:
            ```python
            spec.owned_key(db.keys, "entries", "s-1")   # 'flue::{session:9}/entries:cy0x'
            ```
        """
        return self._keys_by_id(keys, record_id, None).owned(self.collection, name, record_id)

    def _keys_by_id(self, keys: KeySpace, record_id: str, partition: str | None) -> KeySpace:
        if partition is None:
            if self.directed:
                raise ConfigurationError(
                    f"{self.model_name} records are placed by {self.partition_by!r}; name "
                    f"the record's {self.partition_by} to find its keys from its id."
                )
            partition = record_id
        return self.keys_of(keys, partition)

    def candidate_keys(self, keys: KeySpace, record_id: str) -> list[str]:
        """Return every hash key the record with ``record_id`` can be stored at: one, or
        one per bucket when the id alone does not name the bucket (:attr:`directed`).

        Example:
            ```python
            len(Order.__flue_spec__.candidate_keys(db.keys, "o-1"))   # 16
            ```
        """
        if not self.directed:
            return [self.record_key(keys, record_id)]
        if not record_id:
            raise ConfigurationError("A record id must be a non-empty string.")
        segment = encode_segment(record_id)  # once for every bucket
        return [k.record_prefix(self.collection) + segment for k in self.bucket_keys(keys)]

    def bucket_keys(self, keys: KeySpace) -> list[KeySpace]:
        """Return the key space of each bucket of the collection, in bucket order.

        Example:
            ```python
            [k.all(spec.collection) for k in spec.bucket_keys(db.keys)]
            ```
        """
        return [keys.in_bucket(bucket) for bucket in range(self.buckets)]

    def range_key(self, keys: KeySpace, field: str) -> str:
        """Return the set scored by ``field``'s value (the ``all`` set for ``order_by``).

        Example:
            ```python
            spec.range_key(db.keys, "priority")   # 'flue::{ticket:0}:rng:priority'
            ```
        """
        if field == self.order_by:
            return keys.all(self.collection)
        return keys.range_index(self.collection, field)

    def equality_key(self, keys: KeySpace, field: str, value: Any) -> str:
        """Return the equality index set of ``field == value``.

        Example:
            ```python
            spec.equality_key(db.keys, "status", "open")
            ```
        """
        codec = self.codecs[field]
        if not codec.domain:
            return keys.index(self.collection, field, codec.index_value(value))
        # A finite domain (Literal, Enum, bool) has few keys, named on every save: kept.
        cache = self._domain_keys
        name = cache.get((keys.head, keys.bucket, field, value))
        if name is None:
            name = keys.index(self.collection, field, codec.index_value(value))
            if len(cache) < DOMAIN_KEYS:
                cache[(keys.head, keys.bucket, field, value)] = name
        return name

    def compound_key(self, keys: KeySpace, fields: tuple[str, ...], values: list[Any]) -> str:
        """Return the compound index set of ``fields == values``.

        Example:
            ```python
            spec.compound_key(db.keys, ("workflow", "status"), ["w", "active"])
            ```
        """
        parts = [
            encode_segment(self.codecs[f].index_value(v))
            for f, v in zip(fields, values, strict=True)
        ]
        return keys.index(self.collection, "+".join(fields), ".".join(parts).encode())

    # Entries of one record -------------------------------------------------------------

    def order_score(self, values: dict[str, Any]) -> float:
        """Return the score a record has in ``all`` and in every equality index.

        Example:
            ```python
            spec.order_score(ticket.model_dump())
            ```
        """
        if self.order_by is None:
            return 0.0
        return self.codecs[self.order_by].score(values[self.order_by])

    def scored_by(self, keys: KeySpace, field: str, entries: dict[str, float]) -> set[str]:
        """Return the keys of ``entries`` whose score is ``field``'s: every key scored by
        the order when ``field`` orders the collection (all but the other fields' range
        sets), else ``field``'s own range set, if it has one.

        Example:
            ```python
            spec.scored_by(db.keys, "created_at", spec.entries(db.keys, values))
            ```
        """
        if field != self.order_by:
            own = self.range_key(keys, field) if field in self.range_fields else None
            return {own} if own in entries else set()
        others = {self.range_key(keys, f) for f in self.range_fields if f != field}
        return {k for k in entries if k not in others}

    def entries(self, keys: KeySpace, values: dict[str, Any]) -> dict[str, float]:
        """Return every sorted-set entry (key -> score) a record with ``values`` owns.

        Example:
            ```python
            spec.entries(db.keys, ticket.model_dump())
            # {'flue::ticket:all': 1.76e12, 'flue::ticket:idx:status:b3Blbg': 1.76e12, ...}
            ```
        """
        score = self.order_score(values)
        owned = {keys.all(self.collection): score}
        for field in self.equality_fields:
            if values.get(field) is not None:
                owned[self.equality_key(keys, field, values[field])] = score
        for field in self.range_fields:
            if field != self.order_by and values.get(field) is not None:
                owned[self.range_key(keys, field)] = self.codecs[field].score(values[field])
        for fields in self.compound:
            parts = [values.get(f) for f in fields]
            if all(p is not None for p in parts):
                owned[self.compound_key(keys, fields, parts)] = score
        return owned

    def disowned(
        self, keys: KeySpace, values: dict[str, Any], owned: dict[str, float], limit: int = 64
    ) -> list[str]:
        """Return the equality sets a record with ``values`` must not be in, as far as a
        finite domain (``Literal``, ``Enum``, ``bool``) names them; ``owned`` is what
        :meth:`entries` returned for the same values.

        A save removes the record from each, so a stale entry (a crash of an older
        version, a hand edit) never lists a record under a value it no longer has: a
        mutation repairs the status indexes of the row it touches. Compound indexes
        vary their finite fields over the record's other values, up to ``limit`` sets.

        Example:
            ```python
            spec.disowned(db.keys, values, spec.entries(db.keys, values))
            # ['flue::ticket:idx:status:Y2xvc2Vk']   (status is Literal["open", "closed"])
            ```
        """
        where = (keys.head, keys.bucket)
        named = self._domain_sets.get(where)
        if named is None:  # the same sets on every save of the bucket: named once
            named = list(
                dict.fromkeys(
                    self.equality_key(keys, field, value)
                    for field in sorted(self.equality_fields)
                    for value in self.codecs[field].domain
                )
            )
            if len(self._domain_sets) < DOMAIN_KEYS:
                self._domain_sets[where] = named
        if not self.compound:
            return [key for key in named if key not in owned]
        found = list(named)
        for fields in self.compound:
            choices = [
                self.codecs[f].domain or ((values[f],) if values.get(f) is not None else ())
                for f in fields
            ]
            if 0 < math.prod(len(c) for c in choices) <= limit:
                for parts in itertools.product(*choices):
                    found.append(self.compound_key(keys, fields, list(parts)))
        return [key for key in dict.fromkeys(found) if key not in owned]

    def unique_field(self, unique_key: str) -> str:
        """Return the field a ``uniq`` hash key belongs to (its last segment).

        Example:
            ```python
            spec.unique_field("flue:user:uniq:email")   # 'email'
            ```
        """
        field = unique_key.rpartition(":")[2]  # a field name (an identifier) holds no ':'
        if field not in self.unique_fields:
            raise ConfigurationError(f"{unique_key!r} is not a unique index of {self.model_name}.")
        return field

    def unique_claims(self, keys: KeySpace, values: dict[str, Any]) -> dict[str, bytes]:
        """Return the ``uniq`` hash key -> claimed value of each unique field that is set.

        Example:
            ```python
            spec.unique_claims(db.keys, user.model_dump())
            ```
        """
        return {
            keys.unique(self.collection, field): self.codecs[field].index_value(values[field])
            for field in self.unique_fields
            if values.get(field) is not None
        }


def _markers(info: FieldInfo) -> list[Indexed]:
    return [m for m in info.metadata if isinstance(m, Indexed)]


def _declared_bounds_exceed_scores(info: FieldInfo) -> bool:
    """True when an int field's declared bounds allow values a score cannot hold exactly."""
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = item.ge if isinstance(item, annotated_types.Ge) else item.gt
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = item.le if isinstance(item, annotated_types.Le) else item.lt
    return any(isinstance(b, int) and abs(b) > MAX_EXACT_INT for b in (low, high))


def check_meta_options(model_name: str, meta: type | None) -> None:
    """Refuse a ``Meta`` option this library does not know (a misspelling is never silent).

    Raises:
        ConfigurationError: naming the unknown options and the known ones.

    Example:
        >>> class Meta:
        ...     oder_by = "created_at"
        >>> try:
        ...     check_meta_options("Ticket", Meta)
        ... except ConfigurationError as exc:
        ...     print(str(exc)[:56])
        Model Ticket: Meta has unknown option(s) ['oder_by']; th
    """
    declared = {name for name in vars(meta) if not name.startswith("_")} if meta else set()
    unknown = sorted(declared - META_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"Model {model_name}: Meta has unknown option(s) {unknown}; the options are "
            f"{sorted(META_OPTIONS)}."
        )


def build_spec(model_name: str, meta: type | None, fields: dict[str, FieldInfo]) -> ModelSpec:
    """Check a model declaration and return its storage plan.

    Raises:
        ConfigurationError: the declaration cannot work; the message says why and how to
            fix it.

    Example:
        ```python
        spec = build_spec("Ticket", Ticket.Meta, Ticket.model_fields)
        ```
    """

    def bad(message: str) -> ConfigurationError:
        return ConfigurationError(f"Model {model_name}: {message}")

    check_meta_options(model_name, meta)
    collection = getattr(meta, "collection", None)
    if not isinstance(collection, str):
        raise bad(
            'declare `class Meta: collection = "..."`, a stable name for its keys (never '
            "derived from the module path, so moving the class does not orphan its data)."
        )
    try:
        check_collection(collection)
    except ConfigurationError as exc:
        raise bad(str(exc)) from None
    if VERSION_FIELD in fields:
        raise bad(f"the field name {VERSION_FIELD!r} is reserved for the record's version.")
    id_field = fields.get("id")
    if id_field is None or id_field.annotation is not str:
        raise bad("declare `id: str` (for example `id: str = fm.new_id()`).")

    codecs = {name: codec_for(name, info.annotation) for name, info in fields.items()}
    equality: set[str] = set()
    ranged: set[str] = set()
    unique: set[str] = set()
    for name, info in fields.items():
        codec = codecs[name]
        for marker in _markers(info):
            if codec.kind == "json":
                raise bad(
                    f"field {name!r} ({info.annotation}) cannot be indexed: only scalar "
                    "values (str, int, float, bool, Decimal, datetime, date, UUID, Enum, "
                    "bytes, Literal) have an index key."
                )
            if marker.range:
                if codec.kind not in RANGE_KINDS:
                    raise bad(
                        f"field {name!r} is {codec.kind}, which a sorted-set score cannot "
                        "represent exactly; range indexes take int, float, bool, date and "
                        "datetime fields. Use Indexed() for equality queries."
                    )
                if codec.kind == "int" and _declared_bounds_exceed_scores(info):
                    raise bad(
                        f"field {name!r} allows integers beyond ±2**53, which sorted-set "
                        "scores round; narrow its bounds or use Indexed() without range."
                    )
                ranged.add(name)
            else:
                equality.add(name)
            if isinstance(marker, Unique):
                unique.add(name)

    order_by = getattr(meta, "order_by", None)
    if order_by is not None:
        if order_by not in fields:
            raise bad(f"Meta.order_by names {order_by!r}, which is not a field.")
        codec = codecs[order_by]
        if codec.kind not in RANGE_KINDS or codec.nullable:
            raise bad(
                f"Meta.order_by field {order_by!r} must be a required int, float, bool, date "
                f"or datetime (it scores every index); it is {codec.kind}"
                f"{', optional' if codec.nullable else ''}."
            )
        ranged.add(order_by)

    compound: list[tuple[str, ...]] = []
    for declared in getattr(meta, "indexes", ()):
        group = tuple(declared)
        if len(group) < 2 or any(f not in fields for f in group):
            raise bad(f"Meta.indexes entry {declared!r} must name two or more fields of the model.")
        for field in group:
            if codecs[field].kind == "json":
                raise bad(f"compound index {group!r}: field {field!r} cannot be indexed.")
        compound.append(group)

    buckets = getattr(meta, "buckets", 1)
    if not is_bucket_count(buckets):
        raise bad(f"Meta.buckets must be a power of two from 1 to {MAX_BUCKETS}, not {buckets!r}.")
    partition_by = getattr(meta, "partition_by", "id")
    if partition_by != "id":
        placed = fields.get(partition_by) if isinstance(partition_by, str) else None
        if placed is None or placed.annotation is not str or not placed.is_required():
            raise bad(
                f"Meta.partition_by must name a required `str` field of the model (its value "
                f"picks the record's bucket and never changes), not {partition_by!r}."
            )
    if buckets > 1 and unique - {partition_by}:
        raise bad(
            f"Unique() field(s) {sorted(unique - {partition_by})} need every record that "
            f"could hold a value in one bucket (a unique claim and the record it names are "
            f"written in one atomic call); Meta.buckets is {buckets} and records are placed "
            f"by {partition_by!r}. Use Indexed() and check uniqueness in the application, "
            "one bucket, or partition by that field."
        )

    return ModelSpec(
        model_name=model_name,
        collection=collection,
        order_by=order_by,
        codecs=codecs,
        equality_fields=frozenset(equality),
        range_fields=frozenset(ranged),
        unique_fields=frozenset(unique),
        compound=tuple(compound),
        buckets=buckets,
        partition_by=partition_by,
    )


# What a record owns (its _owned field) -------------------------------------------


#: What stands for a counter's value (see :class:`~flue_models.model.writes.Write`) until
#: the script assigns it.
SEQ = "#seq"


def format_score(score: float) -> str:
    """Write a sorted-set score as ``_owned`` keeps it: a whole number without a fraction
    (as the scripts write a counter's value), any other as Python's shortest repr.

    Example:
        >>> format_score(1767225642000.0), format_score(2.5)
        ('1767225642000', '2.5')
    """
    if score.is_integer() and -MAX_EXACT_INT <= score <= MAX_EXACT_INT:
        return str(int(score))
    return repr(score)


def encode_owned(
    base: str,
    entries: dict[str, float],
    unique: dict[str, bytes],
    seq_scored: Collection[str] = (),
) -> bytes:
    """Encode the index entries and unique claims a record owns, as stored in ``_owned``.

    ``base`` is the record's key prefix (:meth:`KeySpace.record_prefix`). The field is
    ASCII tokens separated by one space, claims first, then entries, each part sorted by
    key: ``!<key>=<value>`` a unique claim (the value as unpadded base64url), ``@<score>``
    the score of the entries that follow (see :func:`format_score`; ``@#seq`` until a
    script assigns a counter's value), ``<key>`` an index entry. A key is relative to
    ``base`` (the row's own bucket, so it does not change when the row moves to another
    bucket), or to the prefix when it starts with ``{`` (a key outside the row's bucket).
    Short enough for Redis to keep a typical row as a listpack (values up to 64 bytes).

    Example:
        >>> encode_owned("p::{t:0}:", {"p::{t:0}:all": 7.0}, {"p::{t:0}:uniq:email": b"a@b"})
        b'!uniq:email=YUBi @7 all'
    """
    tokens = [f"!{_owned_key(base, k)}={encode_segment(v)}" for k, v in sorted(unique.items())]
    last: str | None = None
    written = (math.nan, "")  # a score and its text (a record's entries mostly share one)
    for key, score in sorted(entries.items()):
        if key in seq_scored:
            text = SEQ
        else:
            if score != written[0]:
                written = (score, format_score(score))
            text = written[1]
        if text != last:
            tokens.append("@" + text)
            last = text
        tokens.append(_owned_key(base, key))
    return " ".join(tokens).encode()


def owned_scored(owned: bytes, score: float) -> bytes:
    """An ``_owned`` made with ``@#seq`` (see :func:`encode_owned`), as a script stores it
    once the counter or the clock gave the score: ``@`` and :func:`format_score`'s text.

    Example:
        >>> owned_scored(b"@#seq all idx:status:b3Blbg", 1767225642000.0)
        b'@1767225642000 all idx:status:b3Blbg'
    """
    return owned.replace(b"@" + SEQ.encode(), b"@" + format_score(score).encode())


def owned_name(record_key: str, key: str) -> str:
    """Return how ``_owned`` names ``key`` in the row ``record_key`` (see
    :func:`encode_owned`).

    Example:
        >>> owned_name("p::{t:0}:eA", "p::{t:0}:all")
        'all'
    """
    return _owned_key(record_base(record_key), key)


def record_base(record_key: str) -> str:
    """What a record key starts with before its id (``KeySpace.record_prefix``), read off
    the key itself.

    Example:
        >>> record_base("p::{t:0}:eA")
        'p::{t:0}:'
    """
    return record_key[: record_key.rindex(":") + 1]


def _owned_key(base: str, key: str) -> str:
    """``key`` as ``_owned`` names it in a row whose key starts with ``base``: relative to
    ``base``, or to the prefix (it then starts with ``{``) when it is outside the bucket."""
    if key.startswith(base):
        return key[len(base) :]
    return key[base.index(SEPARATOR) + len(SEPARATOR) :]


def decode_owned(
    keys: KeySpace, record_key: str, raw: bytes
) -> tuple[dict[str, float], dict[str, bytes]]:
    """Decode an ``_owned`` field made by :func:`encode_owned`.

    Raises:
        DecodeError: the field is not what :func:`encode_owned` writes.

    Example:
        >>> decode_owned(KeySpace("p"), "p::{t:0}:eA", b"@7 all")
        ({'p::{t:0}:all': 7.0}, {})
    """
    base = record_base(record_key)
    head = keys.head
    entries: dict[str, float] = {}
    unique: dict[str, bytes] = {}
    score: float | None = None
    try:
        for token in raw.decode("ascii").split(" ") if raw else ():
            first = token[0]
            if first == "@":
                score = float(token[1:])
            elif first == "!":
                name, equals, value = token[1:].partition("=")
                if not name or not equals:
                    raise ValueError(f"a claim without its value: {token!r}")
                unique[(head if name[0] == "{" else base) + name] = decode_segment(value)
            elif score is None:
                raise ValueError(f"an entry before its score: {token!r}")
            else:
                entries[(head if first == "{" else base) + token] = score
    except (ValueError, IndexError) as exc:  # (UnicodeDecodeError and binascii's too)
        raise DecodeError(record_key, OWNED_FIELD, f"holds {raw[:80]!r}: {exc}") from None
    return entries, unique
