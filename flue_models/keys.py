"""Every Redis key flue-models uses, built in one place.

Layout (see DESIGN.md, "Storage layout"):

* ``<prefix>:meta``: the schema record (hash); ``<prefix>:meta:lock``: the migration lock.
* ``<prefix>:<collection>:<b64 id>``: one record (hash).
* ``<prefix>:<collection>:all``: every id of a collection (sorted set).
* ``<prefix>:<collection>:version``: the counter record versions are taken from.
* ``<prefix>:<collection>:idx:<field>:<b64 value>``: the ids with that value (sorted
  set scored by the model's order field).
* ``<prefix>:<collection>:rng:<field>``: the ids with the field set, scored by its value.
* ``<prefix>:<collection>:uniq:<field>``: value -> id of a unique field (hash).
* ``<prefix>:<collection>/<name>:<b64 id>``: a key a record owns (a session's entries).
* ``<prefix>:stream:<b64 path>`` (hash), ``...:events`` (stream), ``...:once`` (hash): an
  event stream's metadata, events and idempotency keys.

User-supplied segments (ids, values, paths) are base64url-encoded without padding,
so they never contain ``:`` and never collide with the fixed words of the layout:
a fixed word such as ``all`` is not the canonical encoding of any byte string.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import NamedTuple

from flue_models.errors import ConfigurationError

_COLLECTION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Collection names that would shadow a key of the layout itself.
RESERVED_COLLECTIONS = frozenset({"meta", "stream"})
#: Longest indexed value (in bytes, as encoded) named as itself in its index key; longer
#: ones are named by their digest.
INDEX_VALUE_BOUND = 128


def encode_segment(value: str | bytes) -> str:
    """Encode a user-supplied key segment as unpadded base64url.

    Example:
        >>> encode_segment("runs/42")
        'cnVucy80Mg'
        >>> encode_segment(b"")
        ''
    """
    try:
        raw = value.encode() if isinstance(value, str) else value
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"A key segment (an id, a path, a name) holds a lone surrogate at {exc.start}, "
            "which UTF-8 cannot store; nothing was written."
        ) from None
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_segment(segment: str) -> bytes:
    """Decode a segment made by :func:`encode_segment`.

    Example:
        >>> decode_segment("cnVucy80Mg")
        b'runs/42'
    """
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


#: What ends the prefix in every key name. A prefix never contains it, so no key or SCAN
#: pattern of one prefix can match a key of another, nested ones included (``app`` and
#: ``app:prod``: ``app::*`` cannot match ``app:prod::meta``).
SEPARATOR = "::"


def normalize_prefix(prefix: str) -> str:
    """Strip trailing colons from a key prefix and reject an empty one.

    Raises:
        ConfigurationError: the prefix is empty, all colons, or contains whitespace or
            ``::``.

    Example:
        >>> normalize_prefix("myapp:")
        'myapp'
    """
    cleaned = prefix.rstrip(":")
    if not cleaned:
        raise ConfigurationError(
            f"The key prefix {prefix!r} is empty once trailing ':' are removed; give a "
            "non-empty prefix such as 'flue' or 'myapp:prod'."
        )
    if any(ch.isspace() for ch in cleaned):
        raise ConfigurationError(
            f"The key prefix {prefix!r} contains whitespace; use letters, digits, '_', '-' "
            "and ':' only."
        )
    if SEPARATOR in cleaned:
        raise ConfigurationError(
            f"The key prefix {prefix!r} contains {SEPARATOR!r}, which ends a prefix in every "
            "key name (that is what keeps nested prefixes apart); use single ':'."
        )
    return cleaned


def check_collection(name: str) -> str:
    """Validate a collection name: lowercase letters, digits and ``_``, not reserved.

    Raises:
        ConfigurationError: the name cannot be used as a key segment.

    Example:
        >>> check_collection("workflow_run")
        'workflow_run'
    """
    if not _COLLECTION.match(name) or name in RESERVED_COLLECTIONS:
        raise ConfigurationError(
            f"Invalid collection name {name!r}: use 1-64 lowercase letters, digits and '_', "
            f"starting with a letter, and none of {sorted(RESERVED_COLLECTIONS)}."
        )
    return name


def escape_glob(text: str) -> str:
    """Escape ``text`` for a SCAN/KEYS ``MATCH`` pattern.

    Example:
        >>> escape_glob("app[1]*")
        'app\\\\[1\\\\]\\\\*'
    """
    return re.sub(r"([\\*?\[\]^])", r"\\\1", text)


class StreamKeys(NamedTuple):
    """The three keys of one event stream.

    Example:
        >>> meta, events, once = KeySpace("p").stream("runs/1")
        >>> events
        'p::stream:cnVucy8x:events'
    """

    meta: str
    events: str
    once: str


class KeySpace:
    """The key names under one normalized prefix.

    Example:
        >>> keys = KeySpace("flue:")
        >>> keys.meta, keys.legacy_meta
        ('flue::meta', 'flue:meta')
        >>> keys.record("ticket", "t-1")
        'flue::ticket:dC0x'
        >>> keys.index("ticket", "status", b"open")
        'flue::ticket:idx:status:b3Blbg'
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = normalize_prefix(prefix)
        self.head = self.prefix + SEPARATOR
        self.meta = f"{self.head}meta"
        self.migration_lock = f"{self.meta}:lock"
        #: Where the schema record was kept before the layout ended prefixes with ``::``
        #: (migration ``0002_disjoint_prefixes`` moves it).
        self.legacy_meta = f"{self.prefix}:meta"

    def __repr__(self) -> str:
        return f"KeySpace({self.prefix!r})"

    def pattern(self) -> str:
        """Return the SCAN pattern matching every key under this prefix.

        Example:
            >>> KeySpace("a*b").pattern()
            'a\\\\*b::*'
        """
        return escape_glob(self.head) + "*"

    def relative(self, key: str) -> str:
        """Return ``key`` without this prefix (how a record stores the keys it owns).

        Raises:
            ConfigurationError: ``key`` is not under this prefix.

        Example:
            >>> KeySpace("p").relative("p::ticket:all")
            'ticket:all'
        """
        if not key.startswith(self.head):
            raise ConfigurationError(f"Key {key!r} is not under the prefix {self.prefix!r}.")
        return key[len(self.head) :]

    def absolute(self, relative_key: str) -> str:
        """Return the full key of a key made relative by :meth:`relative`.

        Example:
            >>> KeySpace("p").absolute("ticket:all")
            'p::ticket:all'
        """
        return f"{self.head}{relative_key}"

    def collection_pattern(self, collection: str) -> str:
        """Return the SCAN pattern of a collection's records, indexes and counter.

        Example:
            >>> KeySpace("p").collection_pattern("ticket")
            'p::ticket:*'
        """
        return escape_glob(f"{self.head}{collection}:") + "*"

    def classify(self, collection: str, key: str) -> str | None:
        """Say what a key matched by :meth:`collection_pattern` is.

        Returns ``"record"``, ``"index"`` (``all``, equality and range sets), ``"unique"``,
        ``"counter"`` or ``None`` (not a key of the layout).

        Example:
            >>> keys = KeySpace("p")
            >>> keys.classify("t", "p::t:all"), keys.classify("t", "p::t:dC0x")
            ('index', 'record')
        """
        base = f"{self.head}{collection}:"
        if not key.startswith(base):
            return None
        rest = key[len(base) :]
        if rest == "all" or rest.startswith(("idx:", "rng:")):
            return "index"
        if rest.startswith("uniq:"):
            return "unique"
        if rest == "version":
            return "counter"
        return "record" if rest and ":" not in rest else None

    def record(self, collection: str, record_id: str) -> str:
        """Return the hash key of one record.

        Example:
            >>> KeySpace("p").record("ticket", "x")
            'p::ticket:eA'
        """
        if not record_id:
            raise ConfigurationError("A record id must be a non-empty string.")
        return self.record_prefix(collection) + encode_segment(record_id)

    def record_prefix(self, collection: str) -> str:
        """Return what every record key of ``collection`` starts with (its id follows,
        as :func:`encode_segment` writes it).

        Example:
            >>> KeySpace("p").record_prefix("ticket")
            'p::ticket:'
        """
        return f"{self.head}{collection}:"

    def all(self, collection: str) -> str:
        """Return the sorted set holding every id of a collection.

        Example:
            >>> KeySpace("p").all("ticket")
            'p::ticket:all'
        """
        return f"{self.head}{collection}:all"

    def version_counter(self, collection: str) -> str:
        """Return the counter every write of a collection takes its new version from.

        Example:
            >>> KeySpace("p").version_counter("ticket")
            'p::ticket:version'
        """
        return f"{self.head}{collection}:version"

    def range_index(self, collection: str, field: str) -> str:
        """Return the sorted set of the ids that have ``field`` set, scored by its value.

        Example:
            >>> KeySpace("p").range_index("ticket", "priority")
            'p::ticket:rng:priority'
        """
        return f"{self.head}{collection}:rng:{field}"

    def unique(self, collection: str, field: str) -> str:
        """Return the hash mapping each value of a unique field to the id holding it.

        Example:
            >>> KeySpace("p").unique("user", "email")
            'p::user:uniq:email'
        """
        return f"{self.head}{collection}:uniq:{field}"

    def collection_key(self, collection: str, name: str) -> str:
        """Return a key that belongs to a whole collection (a counter, a marker set).

        Example:
            >>> KeySpace("p").collection_key("submission", "sequence")
            'p::submission/sequence'
        """
        return f"{self.head}{collection}/{name}"

    def owned(self, collection: str, name: str, record_id: str) -> str:
        """Return a key a record owns besides its hash (e.g. a session's entry list).

        The ``/`` keeps it apart from every key of the collection itself.

        Example:
            >>> KeySpace("p").owned("session", "entries", "s-1")
            'p::session/entries:cy0x'
        """
        if not record_id:
            raise ConfigurationError("A record id must be a non-empty string.")
        return f"{self.head}{collection}/{name}:{encode_segment(record_id)}"

    def stream(self, path: str) -> StreamKeys:
        """Return the keys of an event stream: metadata hash, events, idempotency keys.

        Example:
            >>> KeySpace("p").stream("runs/42")
            StreamKeys(meta='p::stream:cnVucy80Mg', events='p::stream:cnVucy80Mg:events', \
once='p::stream:cnVucy80Mg:once')
        """
        if not path:
            raise ConfigurationError("A stream path must be a non-empty string.")
        base = f"{self.head}stream:{encode_segment(path)}"
        return StreamKeys(base, f"{base}:events", f"{base}:once")

    def stream_chunks(self, path: str) -> str:
        """Return the hash of a stream's chunk segments (partial output, by index).

        Example:
            >>> KeySpace("p").stream_chunks("runs/42")
            'p::stream:cnVucy80Mg:chunks'
        """
        return f"{self.stream(path).meta}:chunks"

    def stream_meta_pattern(self) -> str:
        """Return the SCAN pattern of every stream's keys (metadata, events, ...).

        Example:
            >>> KeySpace("p").stream_meta_pattern()
            'p::stream:*'
        """
        return escape_glob(f"{self.head}stream:") + "*"

    def is_stream_meta(self, key: str) -> bool:
        """Whether ``key`` (found by :meth:`stream_meta_pattern`) is a stream's metadata.

        Example:
            >>> keys = KeySpace("p")
            >>> keys.is_stream_meta("p::stream:cnVucy8x")
            True
            >>> keys.is_stream_meta("p::stream:cnVucy8x:events")
            False
        """
        head = f"{self.head}stream:"
        return key.startswith(head) and ":" not in key[len(head) :]

    def closed_streams(self) -> str:
        """Return the sorted set of closed streams' paths, scored by when they closed.

        Example:
            >>> KeySpace("p").closed_streams()
            'p::stream/closed'
        """
        return self.collection_key("stream", "closed")

    def index(self, collection: str, field: str, value: bytes) -> str:
        """Return the sorted set of the ids whose ``field`` encodes to ``value``.

        A value longer than ``INDEX_VALUE_BOUND`` bytes is named by its SHA-256 digest
        (``~`` and 64 hex digits, which no base64url segment can be), so a key name never
        grows with the value; queries re-check such values against the rows.

        Example:
            >>> KeySpace("p").index("ticket", "status", b"open")
            'p::ticket:idx:status:b3Blbg'
            >>> len(KeySpace("p").index("ticket", "title", b"x" * 10_000))
            85
        """
        if len(value) > INDEX_VALUE_BOUND:
            segment = "~" + hashlib.sha256(value).hexdigest()
        else:
            segment = encode_segment(value)
        return f"{self.head}{collection}:idx:{field}:{segment}"
