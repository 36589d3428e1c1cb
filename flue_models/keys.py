"""Every Redis key flue-models uses, built in one place.

Layout (see DESIGN.md, "Storage layout", and the Cluster page of the docs). Every key
starts with ``<prefix>::``; the Redis Cluster hash tag that follows (``{...}``) says which
keys share a slot, so every script and MULTI touches keys of one tag only:

* ``<prefix>::{meta}``: the schema record (hash); ``<prefix>::{meta}:lock``: the lock.
* ``<prefix>::{<collection>:<bucket>}:<b64 id>``: one record (hash). A collection's
  records are spread over its ``Meta.buckets`` buckets by their id (one, ``0``, unless
  the model declares more); a bucket's records, its counter and its slice of every index
  share one tag:
* ``...{<collection>:<bucket>}:all``: every id of the bucket (sorted set).
* ``...{<collection>:<bucket>}:version``: the counter record versions are taken from.
* ``...{<collection>:<bucket>}:idx:<field>:<b64 value>``: the ids with that value (sorted
  set scored by the model's order field).
* ``...{<collection>:<bucket>}:rng:<field>``: the ids with the field set, scored by it.
* ``...{<collection>:<bucket>}:uniq:<field>``: value -> id of a unique field (hash).
* ``...{<collection>:<bucket>}/<name>:<b64 id>``: a key a record owns (a session's
  entries); ``...{<collection>:<bucket>}/<name>``: a key of the bucket (a counter).
* ``<prefix>::{stream:<b64 path>}`` (hash), ``...:events`` (stream), ``...:once``,
  ``...:chunks`` (hashes): an event stream's keys, one slot per stream; a run's stream
  (``runs/<id>``) is in the run's bucket instead (``.../stream:<b64 id>``, ``/events:``...).
* The state kinds' keys (a session's entries and forks, a submission's journal, deletion
  markers, receipts) are keys their collection's buckets own: :meth:`KeySpace.session`,
  :meth:`KeySpace.session_submissions`, :meth:`KeySpace.journal`, :meth:`KeySpace.receipt`.
* ``<prefix>::{stream}/closed``: the closed streams (a hint for retention).

User-supplied segments (ids, values, paths) are base64url-encoded without padding,
so they never contain ``:`` and never collide with the fixed words of the layout:
a fixed word such as ``all`` is not the canonical encoding of any byte string.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import NamedTuple

from redis.crc import key_slot

from flue_models.errors import ConfigurationError

_COLLECTION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ONE_TAG = re.compile(r"^[^{}]*\{[^{}]+\}[^{}]*$")
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
    return base64.urlsafe_b64encode(_utf8(value)).rstrip(b"=").decode("ascii")


def _utf8(value: str | bytes) -> bytes:
    """A key segment's bytes; a lone surrogate, which UTF-8 cannot store, is refused."""
    try:
        return value.encode() if isinstance(value, str) else value
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"A key segment (an id, a path, a name) holds a lone surrogate at {exc.start}, "
            "which UTF-8 cannot store; nothing was written."
        ) from None


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

    A prefix may hold one Cluster hash tag (``{app}``): every key then shares its slot
    (one node holds the whole store). Any other brace is refused, since it would change
    which part of a key names its slot.

    Raises:
        ConfigurationError: the prefix is empty, all colons, or contains whitespace,
            ``::`` or a brace outside one non-empty tag.

    Example:
        >>> normalize_prefix("myapp:")
        'myapp'
        >>> normalize_prefix("{myapp}:prod")
        '{myapp}:prod'
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
    if ("{" in cleaned or "}" in cleaned) and not _ONE_TAG.match(cleaned):
        raise ConfigurationError(
            f"The key prefix {prefix!r} holds a brace that is not one non-empty hash tag; "
            "use no braces, or one tag such as '{myapp}' to keep the whole store in one "
            "Cluster slot."
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


#: The bucket of every record of a one-bucket collection (its hash tag is
#: ``{<collection>:0}``), and the one a split keeps in place.
BUCKET = 0
#: The most buckets a collection may have (``Meta.buckets``, a power of two).
MAX_BUCKETS = 1024


def is_bucket_count(value: object) -> bool:
    """Whether ``value`` can be a collection's bucket count: an int that is a power of two
    from 1 to :data:`MAX_BUCKETS`.

    Example:
        >>> is_bucket_count(16), is_bucket_count(12), is_bucket_count(True)
        (True, False, False)
    """
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 1 <= value <= MAX_BUCKETS
        and not value & (value - 1)
    )


def bucket_of(record_id: str, buckets: int) -> int:
    """Return the bucket of a record: CRC16 of its id (the Cluster slot hash), masked.

    ``buckets`` is a power of two; 1 puts every record in bucket 0.

    Raises:
        ConfigurationError: the id holds a lone surrogate (UTF-8 cannot store it).

    Example:
        >>> bucket_of("t-2", 1), bucket_of("t-2", 16)
        (0, 3)
    """
    if buckets == 1:
        return 0
    return int(key_slot(_utf8(record_id))) & (buckets - 1)


class StreamKeys(NamedTuple):
    """The keys of one event stream, all in one slot.

    Example:
        >>> KeySpace("p").stream("agents/1").events
        'p::{stream:YWdlbnRzLzE}:events'
    """

    #: The metadata hash (head, length, closed...).
    meta: str
    #: The Redis Stream of its events (ids ``0-<seq>``).
    events: str
    #: The hash of idempotency keys already appended.
    once: str
    #: The hash of chunk segments (partial output, by index).
    chunks: str


class SessionKeys(NamedTuple):
    """The keys of one session, all in its bucket.

    Example:
        >>> KeySpace("p").session("s-1").forks
        'p::{session:16}/forks:cy0x'
    """

    #: The session's row (hash).
    row: str
    #: The list of its entries, as JSON, oldest first.
    entries: str
    #: The hash from each entry id to the logical position of its first element.
    entry_ids: str
    #: The sorted set of its forks (fork id -> when it was marked); exists while any does.
    forks: str


class SessionSubmissionKeys(NamedTuple):
    """The submission keys of one session, all in its bucket of the submission collection.

    Example:
        >>> KeySpace("p").session_submissions("s-1").deleting
        'p::{submission:0}/deleting:cy0x'
    """

    #: The session's deletion marker (a guard of its admissions).
    deleting: str
    #: The set of the bucket's sessions whose deletion started.
    deletions: str
    #: The bucket's clock counter (submission sequence numbers).
    sequence: str
    #: The index of the session's submissions (``session_id`` equal to it).
    submissions: str
    #: The index of its submissions not yet settled (``open_session`` equal to it).
    open: str


class ReceiptKeys(NamedTuple):
    """Where the receipt of a dispatch whose row was removed is kept: in the bucket of its
    submission id (an admission knows the id, not the session a reused id was in).

    Example:
        >>> KeySpace("p").receipt("d-1").times
        'p::{submission:3}/receipt_times'
    """

    #: The receipt (JSON).
    receipt: str
    #: The sorted set of the bucket's receipts by when they were kept.
    times: str


#: The built-in state kinds' collections and how many buckets each spreads over (their
#: ``Meta.collection`` and ``Meta.buckets``): a session's keys and its submissions' are in
#: the bucket of its id, a run's and its stream's in the bucket of the run's id.
SESSIONS, SESSION_BUCKETS = "session", 64
SUBMISSIONS, SUBMISSION_BUCKETS = "submission", 16
RUNS, RUN_BUCKETS = "workflow_run", 16
#: The stream ``runs/<run id>`` belongs to that run: it is in the run's bucket (its keys
#: are keys the bucket holds for the run), so one ``MULTI`` changes the run and its stream.
RUN_STREAMS = "runs/"
#: The names of a run's stream keys among the keys its bucket holds for it.
RUN_STREAM_NAMES = ("stream", "events", "once", "chunks")


class KeySpace:
    """The key names under one normalized prefix.

    A collection's keys are those of bucket ``bucket``; :meth:`in_bucket` returns the key
    space of another bucket.

    Example:
        >>> keys = KeySpace("flue:")
        >>> keys.meta
        'flue::{meta}'
        >>> keys.record("ticket", "t-1")
        'flue::{ticket:0}:dC0x'
        >>> keys.index("ticket", "status", b"open")
        'flue::{ticket:0}:idx:status:b3Blbg'
    """

    def __init__(self, prefix: str, *, bucket: int = BUCKET) -> None:
        self.prefix = normalize_prefix(prefix)
        if not 0 <= bucket < MAX_BUCKETS:
            raise ConfigurationError(f"A bucket is 0 to {MAX_BUCKETS - 1}, not {bucket}.")
        self.bucket = bucket
        self._buckets: dict[int, KeySpace] = {bucket: self}
        self.head = self.prefix + SEPARATOR
        self.meta = f"{self.head}{{meta}}"
        self.migration_lock = f"{self.meta}:lock"

    def __repr__(self) -> str:
        if self.bucket != BUCKET:
            return f"KeySpace({self.prefix!r}, bucket={self.bucket})"
        return f"KeySpace({self.prefix!r})"

    def in_bucket(self, bucket: int) -> KeySpace:
        """Return the key space whose collection keys are those of bucket ``bucket``.

        Every other key (streams, the schema record) is the same in all of them.

        Example:
            >>> KeySpace("p").in_bucket(3).all("ticket")
            'p::{ticket:3}:all'
        """
        found = self._buckets.get(bucket)
        if found is None:
            found = self._buckets[bucket] = KeySpace(self.prefix, bucket=bucket)
        return found

    def _base(self, collection: str) -> str:
        """What every key of a collection's bucket starts with (``:`` or ``/`` follows)."""
        return f"{self.head}{{{collection}:{self.bucket}}}"

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
            >>> KeySpace("p").relative("p::{ticket:0}:all")
            '{ticket:0}:all'
        """
        if not key.startswith(self.head):
            raise ConfigurationError(f"Key {key!r} is not under the prefix {self.prefix!r}.")
        return key[len(self.head) :]

    def absolute(self, relative_key: str) -> str:
        """Return the full key of a key made relative by :meth:`relative`.

        Example:
            >>> KeySpace("p").absolute("{ticket:0}:all")
            'p::{ticket:0}:all'
        """
        return f"{self.head}{relative_key}"

    def collection_pattern(self, collection: str) -> str:
        """Return the SCAN pattern of a collection's records, indexes and counter.

        Example:
            >>> KeySpace("p").collection_pattern("ticket")
            'p::{ticket:0}:*'
        """
        return escape_glob(f"{self._base(collection)}:") + "*"

    def buckets_pattern(self, collection: str) -> str:
        """Return the SCAN pattern of a collection's keys in every bucket.

        Example:
            >>> KeySpace("p").buckets_pattern("ticket")
            'p::{ticket:*'
        """
        return escape_glob(f"{self.head}{{{collection}:") + "*"

    def bucket_in_key(self, collection: str, key: str) -> int | None:
        """Return the bucket a key found by :meth:`buckets_pattern` is in (``None``: not a
        key of a bucket of ``collection``).

        Example:
            >>> KeySpace("p").bucket_in_key("ticket", "p::{ticket:12}:all")
            12
        """
        head = f"{self.head}{{{collection}:"
        number, brace, _rest = key[len(head) :].partition("}")
        if not key.startswith(head) or not brace or not number.isdigit():
            return None
        bucket = int(number)
        return bucket if str(bucket) == number and bucket < MAX_BUCKETS else None

    def classify(self, collection: str, key: str) -> str | None:
        """Say what a key matched by :meth:`collection_pattern` is.

        Returns ``"record"``, ``"index"`` (``all``, equality and range sets), ``"unique"``,
        ``"counter"`` or ``None`` (not a key of the layout).

        Example:
            >>> keys = KeySpace("p")
            >>> keys.classify("t", "p::{t:0}:all"), keys.classify("t", "p::{t:0}:dC0x")
            ('index', 'record')
        """
        base = f"{self._base(collection)}:"
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
            'p::{ticket:0}:eA'
        """
        if not record_id:
            raise ConfigurationError("A record id must be a non-empty string.")
        return self.record_prefix(collection) + encode_segment(record_id)

    def record_prefix(self, collection: str) -> str:
        """Return what every record key of ``collection`` starts with (its id follows,
        as :func:`encode_segment` writes it).

        Example:
            >>> KeySpace("p").record_prefix("ticket")
            'p::{ticket:0}:'
        """
        return f"{self._base(collection)}:"

    def all(self, collection: str) -> str:
        """Return the sorted set holding every id of a collection.

        Example:
            >>> KeySpace("p").all("ticket")
            'p::{ticket:0}:all'
        """
        return f"{self._base(collection)}:all"

    def version_counter(self, collection: str) -> str:
        """Return the counter every write of a collection takes its new version from.

        Example:
            >>> KeySpace("p").version_counter("ticket")
            'p::{ticket:0}:version'
        """
        return f"{self._base(collection)}:version"

    def range_index(self, collection: str, field: str) -> str:
        """Return the sorted set of the ids that have ``field`` set, scored by its value.

        Example:
            >>> KeySpace("p").range_index("ticket", "priority")
            'p::{ticket:0}:rng:priority'
        """
        return f"{self._base(collection)}:rng:{field}"

    def unique(self, collection: str, field: str) -> str:
        """Return the hash mapping each value of a unique field to the id holding it.

        Example:
            >>> KeySpace("p").unique("user", "email")
            'p::{user:0}:uniq:email'
        """
        return f"{self._base(collection)}:uniq:{field}"

    def collection_key(self, collection: str, name: str) -> str:
        """Return a key that belongs to a collection's bucket (a counter, a marker set).

        Example:
            >>> KeySpace("p").collection_key("submission", "sequence")
            'p::{submission:0}/sequence'
        """
        return f"{self._base(collection)}/{name}"

    def owned(self, collection: str, name: str, record_id: str) -> str:
        """Return a key a record owns besides its hash (e.g. a session's entry list).

        The ``/`` keeps it apart from every key of the collection itself.

        Example:
            >>> KeySpace("p").owned("session", "entries", "s-1")
            'p::{session:0}/entries:cy0x'
        """
        if not record_id:
            raise ConfigurationError("A record id must be a non-empty string.")
        return f"{self._base(collection)}/{name}:{encode_segment(record_id)}"

    def owned_parts(self, collection: str, key: str) -> tuple[str, str] | None:
        """Split a key made by :meth:`owned` in this bucket into its name and the encoded
        id segment of its record; ``None`` for any other key.

        Example:
            >>> KeySpace("p").owned_parts("session", "p::{session:0}/entries:cy0x")
            ('entries', 'cy0x')
            >>> KeySpace("p").owned_parts("session", "p::{session:0}:cy0x") is None
            True
        """
        parts = self.bucket_key_parts(collection, key)
        return None if parts is None or parts[1] is None else (parts[0], parts[1])

    def bucket_key_parts(self, collection: str, key: str) -> tuple[str, str | None] | None:
        """Split a key of this bucket made by :meth:`owned` or :meth:`collection_key`
        into its name and its encoded segment (``None`` for a key of the whole bucket);
        ``None`` for any other key.

        Example:
            >>> KeySpace("p").bucket_key_parts("submission", "p::{submission:0}/receipt:ZC0x")
            ('receipt', 'ZC0x')
            >>> KeySpace("p").bucket_key_parts("submission", "p::{submission:0}/deletions")
            ('deletions', None)
        """
        head = f"{self._base(collection)}/"
        if not key.startswith(head):
            return None
        name, colon, segment = key[len(head) :].rpartition(":")
        return (name, segment) if colon else (segment, None)

    def stream(self, path: str) -> StreamKeys:
        """Return the keys of the event stream at ``path``.

        A run's stream (``runs/<run id>``) is in the run's bucket; any other stream has a
        hash tag of its own, so streams spread over a cluster's slots.

        Example:
            >>> KeySpace("p").stream("agents/42").meta
            'p::{stream:YWdlbnRzLzQy}'
            >>> KeySpace("p").stream("runs/r-1").events
            'p::{workflow_run:0}/events:ci0x'
        """
        if not path:
            raise ConfigurationError("A stream path must be a non-empty string.")
        if path.startswith(RUN_STREAMS) and len(path) > len(RUN_STREAMS):
            run_id = path[len(RUN_STREAMS) :]
            bucket = self.in_bucket(bucket_of(run_id, RUN_BUCKETS))
            meta, events, once, chunks = (bucket.owned(RUNS, n, run_id) for n in RUN_STREAM_NAMES)
            return StreamKeys(meta, events, once, chunks)
        base = self._stream_head + encode_segment(path) + "}"
        return StreamKeys(base, f"{base}:events", f"{base}:once", f"{base}:chunks")

    def session(self, session_id: str) -> SessionKeys:
        """Return the keys of one session (its row, entries, entry ids, forks).

        Example:
            >>> KeySpace("p").session("s-1").row
            'p::{session:16}:cy0x'
        """
        if not session_id:
            raise ConfigurationError("A record id must be a non-empty string.")
        base = self.in_bucket(bucket_of(session_id, SESSION_BUCKETS))._base(SESSIONS)
        segment = encode_segment(session_id)  # once for the four keys
        return SessionKeys(
            f"{base}:{segment}",
            f"{base}/entries:{segment}",
            f"{base}/entry_ids:{segment}",
            f"{base}/forks:{segment}",
        )

    def session_submissions(self, session_id: str) -> SessionSubmissionKeys:
        """Return the submission keys of one session's bucket (deletion marker, the
        bucket's deletion set and clock).

        Example:
            >>> KeySpace("p").session_submissions("s-1").sequence
            'p::{submission:0}/sequence'
        """
        bucket = self.in_bucket(bucket_of(session_id, SUBMISSION_BUCKETS))
        return SessionSubmissionKeys(
            bucket.owned(SUBMISSIONS, "deleting", session_id),
            bucket.collection_key(SUBMISSIONS, "deletions"),
            bucket.collection_key(SUBMISSIONS, "sequence"),
            bucket.index(SUBMISSIONS, "session_id", _utf8(session_id)),
            bucket.index(SUBMISSIONS, "open_session", _utf8(session_id)),
        )

    def journal(self, submission_id: str, session_id: str | None = None) -> str:
        """Return the recovery journal of a submission (it goes with the row): in its
        session's bucket, or, without ``session_id``, in this key space's bucket.

        Example:
            >>> KeySpace("p").journal("sub-1", "s-1")
            'p::{submission:0}/journal:c3ViLTE'
        """
        bucket = self
        if session_id is not None:
            bucket = self.in_bucket(bucket_of(session_id, SUBMISSION_BUCKETS))
        return bucket.owned(SUBMISSIONS, "journal", submission_id)

    def receipt(self, submission_id: str) -> ReceiptKeys:
        """Return where the receipt of a removed dispatch is kept (see :class:`ReceiptKeys`).

        Example:
            >>> KeySpace("p").receipt("d-1").receipt
            'p::{submission:3}/receipt:ZC0x'
        """
        bucket = self.in_bucket(bucket_of(submission_id, SUBMISSION_BUCKETS))
        return ReceiptKeys(
            bucket.owned(SUBMISSIONS, "receipt", submission_id),
            bucket.collection_key(SUBMISSIONS, "receipt_times"),
        )

    def every_submission_bucket(self, name: str) -> list[str]:
        """Return the key ``name`` (``deletions``, ``receipt_times``) of every bucket of the
        submission collection.

        Example:
            >>> KeySpace("p").every_submission_bucket("deletions")[1]
            'p::{submission:1}/deletions'
        """
        return [
            self.in_bucket(b).collection_key(SUBMISSIONS, name) for b in range(SUBMISSION_BUCKETS)
        ]

    def attempt_markers(self) -> str:
        """Return the sorted set of open submission attempts (one for the collection).

        Example:
            >>> KeySpace("p").attempt_markers()
            'p::{submission:0}/attempt_markers'
        """
        return self.in_bucket(BUCKET).collection_key(SUBMISSIONS, "attempt_markers")

    def stream_meta_pattern(self) -> str:
        """Return the SCAN pattern of every stream's keys (metadata, events, ...).

        Example:
            >>> KeySpace("p").stream_meta_pattern()
            'p::{stream:*'
        """
        return escape_glob(self._stream_head) + "*"

    @property
    def _stream_head(self) -> str:
        return f"{self.head}{{stream:"

    def is_stream_meta(self, key: str) -> bool:
        """Whether ``key`` (found by :meth:`stream_meta_pattern`) is a stream's metadata.

        Example:
            >>> keys = KeySpace("p")
            >>> keys.is_stream_meta("p::{stream:cnVucy8x}")
            True
            >>> keys.is_stream_meta("p::{stream:cnVucy8x}:events")
            False
        """
        head = self._stream_head
        if not key.startswith(head):
            return False
        rest = key[len(head) :]
        return rest.endswith("}") and not any(ch in rest[:-1] for ch in ":{}")

    def closed_streams(self) -> str:
        """Return the sorted set of closed streams' paths, scored by when they closed.

        Example:
            >>> KeySpace("p").closed_streams()
            'p::{stream}/closed'
        """
        return f"{self.head}{{stream}}/closed"

    def index(self, collection: str, field: str, value: bytes) -> str:
        """Return the sorted set of the ids whose ``field`` encodes to ``value``.

        A value longer than ``INDEX_VALUE_BOUND`` bytes is named by its SHA-256 digest
        (``~`` and 64 hex digits, which no base64url segment can be), so a key name never
        grows with the value; queries re-check such values against the rows.

        Example:
            >>> KeySpace("p").index("ticket", "status", b"open")
            'p::{ticket:0}:idx:status:b3Blbg'
            >>> len(KeySpace("p").index("ticket", "title", b"x" * 10_000))
            89
        """
        if len(value) > INDEX_VALUE_BOUND:
            segment = "~" + hashlib.sha256(value).hexdigest()
        else:
            segment = encode_segment(value)
        return f"{self._base(collection)}:idx:{field}:{segment}"
