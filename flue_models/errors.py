"""Every error flue-models raises, in one tree grouped by what the caller does next.

Catch :class:`FlueModelsError` to handle all of them; the redis-py or pydantic error
behind one is chained as its ``__cause__``, and any URL in a message has its password
masked. Each message says what was found, what was expected and what to do next.

```text
FlueModelsError
├── ConfigurationError      fix the code, a setting or an argument; nothing was sent
│   ├── InvalidURLError
│   ├── QueryError
│   └── EncodingError
├── UnavailableError        the server cannot answer now: retry later
│   ├── ConnectionFailedError
│   │   └── AuthenticationFailedError
│   ├── ConnectionLostError    (unsafe: a write may have run; read to tell)
│   ├── PoolExhaustedError
│   └── OutOfMemoryError
├── ConflictError           refused, nothing written: read again and decide
│   ├── AlreadyExistsError
│   ├── UniqueViolationError
│   ├── GuardError
│   ├── StreamClosedError, StreamConflictError
│   ├── AdmissionConflictError
│   └── SessionBusyError, SessionDeletingError, SessionForkedError
├── NotFoundError           what was named does not exist
│   └── StreamNotFoundError
├── CorruptDataError        stored data cannot be read as written: repair or delete it
│   └── DecodeError
├── SchemaError             the store's schema: migrate, upgrade or use another prefix
│   ├── SchemaMissingError, SchemaTooNewError, SchemaLayoutError, ForeignSchemaError
│   ├── WritersActiveError
│   └── MigrationFileError, MigrationLockError, MigrationFailedError
├── ServerCheckError        the server's settings: change them
└── CommandError            the server refused a command
    ├── ScriptError
    └── BatchCommandError
```

Example:
    >>> issubclass(StreamConflictError, ConflictError), issubclass(ConnectionLostError,
    ...     UnavailableError)
    (True, True)
"""

from __future__ import annotations

from typing import Any


class FlueModelsError(Exception):
    """Base class of every error raised by flue-models.

    Example:
        >>> try:
        ...     raise FlueModelsError("something went wrong")
        ... except FlueModelsError as exc:
        ...     str(exc)
        'something went wrong'
    """


# Fix the code, a setting or an argument ----------------------------------------------


class ConfigurationError(FlueModelsError):
    """A setting, a declaration or an argument cannot work; nothing was sent or written.

    Also: no database bound to the task (``connect()`` first), an embedded server that
    cannot start, a call whose keys span Cluster slots, a batch holding one record twice,
    a save that would change a record's partition field, a malformed cursor or offset.

    Example:
        >>> from flue_models.keys import KeySpace
        >>> try:
        ...     KeySpace(":::")
        ... except ConfigurationError as exc:
        ...     "prefix" in str(exc)
        True
    """


class InvalidURLError(ConfigurationError):
    """A Redis URL is malformed; the message shows it with any password masked.

    Example:
        >>> from flue_models.config import parse_url
        >>> try:
        ...     parse_url("http://example.com")
        ... except InvalidURLError as exc:
        ...     "redis://" in str(exc)
        True
    """


class QueryError(ConfigurationError):
    """A query cannot run: a field without the index it needs, a bad value or cursor.

    Example:
        ```python
        Ticket.find(Ticket.title == "x")   # QueryError: mark 'title' Indexed()
        ```
    """


class EncodingError(ConfigurationError):
    """A value cannot be stored (a naive datetime, NaN in an index, an integer too large).

    Example:
        >>> from flue_models.model.codec import codec_for
        >>> import datetime as dt
        >>> codec_for("when", dt.datetime).encode(dt.datetime(2026, 1, 1))
        Traceback (most recent call last):
        ...
        flue_models.errors.EncodingError: Field 'when' holds a naive datetime ...
    """


def not_connected(detail: str = "no database is bound to this task") -> ConfigurationError:
    """Return the error of a model used with no database bound, or after it was closed.

    Example:
        >>> "connect()" in str(not_connected())
        True
    """
    return ConfigurationError(
        f"Not connected: {detail}. Open one with `async with flue_models.connect() as db:` "
        "(or `db = await flue_models.connect()`), or bind one with Model.using(db)."
    )


def cross_slot(call: str, slots: dict[str, int]) -> ConfigurationError:
    """Return the error of one script call or MULTI naming keys of several Cluster slots.

    A cluster refuses such a call (``CROSSSLOT``); the slot check (``FLUE_CHECK_SLOTS=1``,
    on in the test suite) refuses it on a standalone server too, before sending it.

    Example:
        >>> str(cross_slot("save", {"a": 15495, "b": 3300}))[:39]
        "The 'save' call names keys of 2 Cluster"
    """
    shown = ", ".join(f"{key} (slot {slot})" for key, slot in list(slots.items())[:4])
    return ConfigurationError(
        f"The {call!r} call names keys of {len(set(slots.values()))} Cluster hash slots "
        f"({shown}); a script or MULTI may touch one slot only. Nothing was sent."
    )


# Retry later -------------------------------------------------------------------------


class UnavailableError(FlueModelsError):
    """The server cannot answer now: it is down, unreachable, busy or full. Retry later
    (the library's own retries, ``connect(retry=...)``, have run already).

    Example:
        ```python
        try:
            await ticket.save()
        except fm.UnavailableError:
            ...   # back off and try again; a ConnectionLostError with unsafe=True may
                  # have written: read first
        ```
    """


class ConnectionFailedError(UnavailableError):
    """The server could not be reached; the message shows the URL with its password masked.

    The message says why when the server answered but refused: a database it does not
    have, a port that does not speak Redis, a failed TLS handshake; wrong credentials are
    an :class:`AuthenticationFailedError`.

    Example:
        >>> "***" in str(ConnectionFailedError("redis://:***@db:6379/0", "refused"))
        True
    """

    def __init__(self, display_url: str, reason: str, advice: str | None = None) -> None:
        self.url = display_url
        self.reason = reason
        super().__init__(
            f"Could not connect to the Redis server at {display_url}: {reason.rstrip('.')}. "
            + (advice or "Check that it runs and that REDIS_URL (or the url argument) names it.")
        )


class AuthenticationFailedError(ConnectionFailedError):
    """The server refused the credentials, or wants some and none were given.

    Example:
        >>> "password" in str(AuthenticationFailedError("redis://:***@db/0", "WRONGPASS"))
        True
    """

    def __init__(self, display_url: str, reason: str) -> None:
        super().__init__(
            display_url,
            f"authentication failed ({reason.rstrip('.')})",
            "Check the user name and password in the URL "
            "(redis://USER:PASSWORD@HOST:PORT/DB) and the server's ACL.",
        )


class ConnectionLostError(UnavailableError):
    """The server went away (or did not answer in time) during a call, after the retries.

    ``timed_out`` is True when it did not answer within ``connect(timeout=...)``.
    ``unsafe`` is True when the command was not safe to repeat and may have run before
    the connection dropped: read the state to tell. On a cluster the message names the
    node, and a refusal of the cluster's (a slot being moved, a failover) says so.

    Example:
        ```python
        try:
            await stream.append({"n": 1})
        except ConnectionLostError as exc:
            if exc.unsafe:
                ...   # read the stream: the event may be there
        ```
    """

    def __init__(
        self,
        display_url: str,
        command: str,
        reason: str,
        *,
        unsafe: bool = False,
        timed_out: bool = False,
        advice: str = "check that the server is up",
        refused: bool = False,
    ) -> None:
        self.url, self.command, self.unsafe = display_url, command, unsafe
        self.timed_out = timed_out
        if unsafe:
            outcome = (
                f"{command} is not safe to repeat, so it was not retried; it may or may not "
                "have run: read the state to tell"
            )
        else:
            outcome = f"the retries did not reach it; {advice}"
        lost = "No answer in time from" if timed_out else "Lost the connection to"
        if refused:
            lost = "The cluster kept refusing the call at"
        super().__init__(
            f"{lost} the Redis server at {display_url} ({reason.rstrip('.')}): {outcome}."
        )


class PoolExhaustedError(UnavailableError):
    """Every connection of the pool stayed busy for ``pool_timeout`` seconds.

    Example:
        ```python
        await fm.connect(pool_size=200, pool_timeout=30)   # more, or a longer wait
        ```
    """

    def __init__(self, display_url: str, reason: str) -> None:
        self.url = display_url
        super().__init__(
            f"No free connection to {display_url} ({reason.rstrip('.')}): every connection "
            "of the pool stayed busy for pool_timeout seconds. Raise connect(pool_size=...) "
            "or pool_timeout, or run fewer calls at once."
        )


class OutOfMemoryError(UnavailableError):
    """The server is at ``maxmemory`` (with ``noeviction``) and refuses writes.

    Nothing was written: write scripts are refused up front under OOM.

    Example:
        >>> "maxmemory" in str(OutOfMemoryError("save"))
        True
    """

    def __init__(self, script: str) -> None:
        self.script = script
        super().__init__(
            f"The server is out of memory (used memory > maxmemory) and refused the "
            f"{script!r} write; nothing was written. Free memory (delete or prune data) or "
            "raise maxmemory, then retry."
        )


# Written, not yet replicated ----------------------------------------------------------


class NotReplicatedError(UnavailableError):
    """A write landed on the primary, but fewer replicas than ``connect(wait_replicas=N)``
    acknowledged it within ``wait_timeout`` (``WAIT``). The write stands and is not
    undone: it is lost only if the primary fails before its replicas catch up.

    Do not repeat a write that is not safe to repeat; read the state, or wait and check
    the replicas (``flue-models check``).

    Attributes:
        wanted: the replicas asked for; ``acknowledged``: those that answered in time.

    Example:
        ```python
        try:
            await run.finish(result)
        except fm.NotReplicatedError as exc:
            log.warning("finished, on %d of %d replicas so far", exc.acknowledged, exc.wanted)
        ```
    """

    def __init__(self, where: str, command: str, wanted: int, acknowledged: int, timeout: float):
        self.wanted, self.acknowledged, self.command = wanted, acknowledged, command
        super().__init__(
            f"{command} landed on {where}, but {acknowledged} of the {wanted} replica(s) "
            f"asked for acknowledged it within {timeout:g} s (WAIT): the write stands and "
            "is not undone; it would be lost only if that primary failed before its "
            "replicas caught up. Do not repeat it blindly: read the state."
        )


# Refused, nothing written ------------------------------------------------------------


class ConflictError(FlueModelsError):
    """A write was refused because of what the store holds; nothing was written. Read
    again and decide.

    The subclasses say what refused it; a ``ConflictError`` itself is a stale copy: the
    record changed (or was deleted) since this copy was read.

    Attributes:
        model: the model's class name (``""`` when the refusal is not about a record).
        record_id: the record's id (``""`` likewise).
        expected: the version this copy was based on (0: a new record).
        found: the version in the store (0: the record does not exist).

    Example:
        ```python
        try:
            await stale_copy.save()
        except fm.ConflictError as exc:
            fresh = await Ticket.get(exc.record_id)
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        record_id: str = "",
        expected: int = 0,
        found: int = 0,
    ) -> None:
        self.model, self.record_id = model, record_id
        self.expected, self.found = expected, found
        super().__init__(message)

    @classmethod
    def stale(cls, model: str, record_id: str, expected: int, found: int) -> ConflictError:
        """Return the error of a copy whose record changed (or was deleted) since it was read.

        Example:
            >>> ConflictError.stale("Ticket", "t-1", 2, 3).found
            3
        """
        what = "was deleted by another writer" if found == 0 else "was changed by another writer"
        return cls(
            f"{model} {record_id!r} {what}: this copy has version {expected}, the store has "
            f"version {found}. Nothing was written; load it again with "
            f"{model}.get({record_id!r}) and reapply the change.",
            model=model,
            record_id=record_id,
            expected=expected,
            found=found,
        )


class AlreadyExistsError(ConflictError):
    """A new record was saved (or created) with an id that is already taken: by a record
    of its own partition, or of another (``Meta.partition_by``: an id names one record in
    the collection; ``partition`` then says whose it is).

    Example:
        ```python
        await Ticket.create(id="t-1", status="open", priority=1)
        await Ticket.create(id="t-1", status="open", priority=1)   # AlreadyExistsError
        ```
    """

    def __init__(
        self, model: str, record_id: str, found: int, *, message: str = "", partition: str = ""
    ) -> None:
        self.partition = partition
        super().__init__(
            message
            or (
                f"{model} {record_id!r} already exists (version {found}); nothing was "
                f"written. Load it with {model}.get({record_id!r}) to change it, or choose "
                "another id."
            ),
            model=model,
            record_id=record_id,
            found=found,
        )

    @classmethod
    def claimed(cls, model: str, record_id: str, field: str, partition: str) -> AlreadyExistsError:
        """Return the error of a new record whose id a record of another partition holds.

        Example:
            >>> AlreadyExistsError.claimed("Order", "o-1", "tenant", "acme").partition
            'acme'
        """
        return cls(
            model,
            record_id,
            0,
            partition=partition,
            message=(
                f"{model} {record_id!r} is taken by the record with {field} = {partition!r}; "
                "nothing was written. Choose another id."
            ),
        )


class UniqueViolationError(ConflictError):
    """A save would give a second record the value of a ``Unique()`` field.

    Example:
        ```python
        await User.create(email="a@example.com")
        await User.create(email="a@example.com")   # UniqueViolationError
        ```
    """

    def __init__(self, model: str, field: str, value: object, holder: str) -> None:
        self.field = field
        self.value = value
        self.holder = holder
        super().__init__(
            f"{model}.{field} = {value!r} is already held by {model} {holder!r}; values of a "
            "Unique() field must differ. Nothing was written.",
            model=model,
        )


class GuardError(ConflictError):
    """A write was refused because a key it is guarded by exists (e.g. a deletion marker).

    Example:
        ```python
        write.absent.append(marker_key)   # the save is refused while marker_key exists
        ```
    """

    def __init__(self, model: str, record_id: str, key: str) -> None:
        self.key = key
        super().__init__(
            f"{model} {record_id!r} was not written: {key} exists, which this write is "
            "guarded against. Nothing was written.",
            model=model,
            record_id=record_id,
        )


class StreamClosedError(ConflictError):
    """Appending to a closed stream.

    Example:
        >>> "closed" in str(StreamClosedError("runs/1"))
        True
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"Event stream {path!r} is closed; nothing more can be appended.")


class StreamConflictError(ConflictError):
    """``append_once`` reused an idempotency key with different events.

    Example:
        >>> StreamConflictError("runs/1", "k", "0000000000000000_0000000000000002").key
        'k'
    """

    def __init__(self, path: str, key: str, offset: str) -> None:
        self.path = path
        self.key = key
        super().__init__(
            f"Idempotency key {key!r} of event stream {path!r} was already used for "
            f"different events (at offset {offset}); nothing was appended. Use a new key "
            "for new events."
        )


class AdmissionConflictError(ConflictError):
    """A direct admission reused an id with another payload, session or kind.

    Example:
        >>> "sub-1" in str(AdmissionConflictError("sub-1"))
        True
    """

    def __init__(self, submission_id: str) -> None:
        self.submission_id = submission_id
        super().__init__(
            f"Submission {submission_id!r} was already admitted with another payload, "
            "session or kind; nothing was admitted. Use a new id for a new submission.",
            model="Submission",
            record_id=submission_id,
        )


class SessionBusyError(ConflictError):
    """A session cannot be deleted while any of its submissions is queued or running.

    Example:
        >>> "2" in str(SessionBusyError("s-1", 2))
        True
    """

    def __init__(self, session_id: str, open_count: int) -> None:
        self.session_id = session_id
        super().__init__(
            f"Session {session_id!r} has {open_count} queued or running submission(s); settle "
            "them before deleting the session. Nothing was deleted."
        )


class SessionDeletingError(ConflictError):
    """Admission into (or deletion of) a session whose deletion is in progress.

    Example:
        >>> "s-1" in str(SessionDeletingError("s-1"))
        True
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"Session {session_id!r} is being deleted; nothing is admitted into it. Resume "
            "the deletion with Submission.delete_session() if it was interrupted."
        )


class SessionForkedError(ConflictError):
    """The session has forks, which share its history: it cannot be deleted (unless
    ``forks="cascade"``) or have its entries replaced.

    Example:
        ```python
        try:
            await Session.delete_id(parent_id)
        except SessionForkedError:
            await Session.delete_id(parent_id, forks="cascade")
        ```
    """

    def __init__(self, session_id: str, action: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"Session {session_id!r} has forks, which share its history; {action}. "
            "Delete the forks first, or delete with forks='cascade'.",
            model="Session",
            record_id=session_id,
        )


# Not found ---------------------------------------------------------------------------


class NotFoundError(FlueModelsError):
    """What a call names (a session to fork, an entry, a stream to append to) does not
    exist. Reads by id return ``None`` instead; this is for calls that need the thing.

    Example:
        >>> issubclass(StreamNotFoundError, NotFoundError)
        True
    """


class StreamNotFoundError(NotFoundError):
    """Appending to (or closing) a stream that was never created.

    Example:
        >>> "runs/1" in str(StreamNotFoundError("runs/1"))
        True
    """

    def __init__(self, path: str, advice: str = "create it first") -> None:
        self.path = path
        super().__init__(f"Event stream {path!r} does not exist; {advice}.")


# Stored data unreadable --------------------------------------------------------------


class CorruptDataError(FlueModelsError):
    """A key the library writes holds something it did not write (another type, a value
    that is not a number, two records claiming one id); nothing was written.

    Every script checks each key it will write before its first write, so the store is
    left exactly as it was. ``key`` names the key at fault.

    Example:
        >>> "a string" in str(CorruptDataError.wrong_type("save", "p:t:all", "string", "zset"))
        True
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        self.key = key
        super().__init__(message)

    @classmethod
    def wrong_type(cls, script: str, key: str, found: str, wanted: str) -> CorruptDataError:
        """Return the error of a key the library keeps as one Redis type holding another.

        Example:
            >>> CorruptDataError.wrong_type("save", "p:t:all", "string", "zset").key
            'p:t:all'
        """
        return cls(
            f"Key {key!r} is a {found}, where flue-models keeps a {wanted}; nothing was "
            f"written ({script!r}). Something else wrote it: inspect it (TYPE, DUMP), move "
            "it away, then rebuild what it held (a migration's ctx.rebuild_indexes for an "
            "index).",
            key=key,
        )

    @classmethod
    def not_a_number(cls, script: str, key: str, field: str, value: str) -> CorruptDataError:
        """Return the error of a counter or field the library parses as a number holding
        something else.

        Example:
            >>> "'seven'" in str(CorruptDataError.not_a_number("save", "p:t:x", "version", "seven"))
            True
        """
        return cls(
            f"Field {field!r} of key {key!r} holds {value[:80]!r}, not a number; nothing was "
            f"written ({script!r}). Something else wrote it: restore it from the record it "
            "belongs to, or delete and re-create that record.",
            key=key,
        )

    @classmethod
    def ambiguous_id(cls, model: str, record_id: str, keys: list[str]) -> CorruptDataError:
        """Return the error of a read by id alone that found records of that id in more
        than one partition (two creates in two partitions raced).

        Example:
            >>> "partition=" in str(CorruptDataError.ambiguous_id("Order", "o-1", ["a", "b"]))
            True
        """
        return cls(
            f"{model} {record_id!r} is held by {len(keys)} records ({', '.join(keys)}); "
            f"read it with {model}.get({record_id!r}, partition=...), and delete the one "
            "you do not want.",
            key=keys[0] if keys else "",
        )


class DecodeError(CorruptDataError):
    """A stored hash cannot be read as the model (edited by hand, or by other software).

    Example:
        ```python
        await Ticket.get("t-1")   # DecodeError: key flue::{ticket:0}:dC0x, field 'priority': ...
        ```
    """

    def __init__(self, key: str, field: str, problem: str) -> None:
        self.field = field
        super().__init__(
            f"The record at {key} cannot be decoded: field {field!r} {problem}. Repair or "
            "delete the hash, or check what else writes under this prefix.",
            key=key,
        )


# The store's schema ------------------------------------------------------------------


class SchemaError(FlueModelsError):
    """Base class of the errors of the schema record, the stored layout and migrations.

    Example:
        >>> issubclass(SchemaTooNewError, SchemaError)
        True
    """


class SchemaMissingError(SchemaError):
    """``connect(migrate=False)`` on a prefix that was never migrated.

    Example:
        >>> "migrate" in str(SchemaMissingError("app", "app:meta"))
        True
    """

    def __init__(self, prefix: str, key: str) -> None:
        self.prefix = prefix
        super().__init__(
            f"The prefix {prefix!r} has no schema record ({key}); run `flue-models migrate` "
            "or connect with migrate=True first. Nothing was written."
        )


class SchemaTooNewError(SchemaError):
    """The store was migrated by a newer flue-models (or application) than this one.

    Example:
        >>> "upgrade" in str(SchemaTooNewError("flue", stored=5, newest=3, prefix="app"))
        True
    """

    def __init__(self, set_name: str, *, stored: int, newest: int, prefix: str) -> None:
        self.set_name = set_name
        self.stored = stored
        self.newest = newest
        super().__init__(
            f"The data under prefix {prefix!r} is at schema version {stored} of migration "
            f"set {set_name!r}, but this installation knows only up to {newest}. Nothing was "
            "read or written: upgrade flue-models (or the application that owns the set), "
            "or use another key prefix."
        )


class SchemaLayoutError(SchemaError):
    """The store's layout is not the one this code reads; nothing was read or written.

    Either an older, pre-release layout of flue-models (its own migration set is one file
    whose number is the layout's version, with no upgrade path from earlier ones), or a
    collection stored in another number of buckets, or placed by another field, than its
    model declares (``Meta.buckets``, ``Meta.partition_by``): reading so would miss
    records, writing would scatter them; ``flue-models cluster split`` moves them.

    Example:
        >>> "pre-release" in str(SchemaLayoutError.older("app", 4, 9))
        True
    """

    def __init__(
        self,
        message: str,
        *,
        prefix: str,
        collection: str = "",
        stored: int | str = "",
        declared: int | str = "",
    ) -> None:
        self.prefix, self.collection = prefix, collection
        #: What the store has and what this code declares (a layout version, a bucket
        #: count or a partition field).
        self.stored, self.declared = stored, declared
        super().__init__(message)

    @classmethod
    def older(cls, prefix: str, stored: int, needed: int) -> SchemaLayoutError:
        """Return the error of a store in an older, pre-release layout.

        Example:
            >>> SchemaLayoutError.older("app", 4, 9).prefix
            'app'
        """
        return cls(
            f"The store under prefix {prefix!r} is in the pre-release layout {stored}; this "
            f"flue-models reads layout {needed} only and does not upgrade older ones. Nothing "
            "was read or written: export what you need with the flue-models that wrote it, "
            "then delete the prefix's keys (or use another key prefix).",
            prefix=prefix,
            stored=stored,
            declared=needed,
        )

    @classmethod
    def buckets(
        cls, prefix: str, collection: str, *, stored: int, declared: int
    ) -> SchemaLayoutError:
        """Return the error of a model declaring another ``Meta.buckets`` than its
        collection's records are stored in.

        Example:
            >>> "cluster split" in str(SchemaLayoutError.buckets("a", "t", stored=1, declared=16))
            True
        """
        return cls(
            f"Collection {collection!r} under prefix {prefix!r} is stored in {stored} "
            f"bucket(s) but its model declares Meta.buckets = {declared}. Nothing was read "
            f"or written. Stop its writers and run `flue-models cluster split {collection} "
            f"--buckets {declared}` on a standalone server, or declare {stored} again.",
            prefix=prefix,
            collection=collection,
            stored=stored,
            declared=declared,
        )

    @classmethod
    def partition(
        cls, prefix: str, collection: str, stored: str, declared: str, buckets: int
    ) -> SchemaLayoutError:
        """Return the error of a model placing its records by another field
        (``Meta.partition_by``) than its collection's records are stored by.

        Example:
            >>> "--partition-by tenant" in str(
            ...     SchemaLayoutError.partition("app", "order", "id", "tenant", 16))
            True
        """
        return cls(
            f"Collection {collection!r} under prefix {prefix!r} keeps its records in buckets "
            f"by {stored!r} but its model declares Meta.partition_by = {declared!r}. Nothing "
            f"was read or written. Stop its writers and run `flue-models cluster split "
            f"{collection} --buckets {buckets} --partition-by {declared}` on a standalone "
            f"server, or declare {stored!r} again.",
            prefix=prefix,
            collection=collection,
            stored=stored,
            declared=declared,
        )


class ForeignSchemaError(SchemaError):
    """The prefix holds what flue-models did not write: a schema record with another
    tool's stamp, a version that is not a number, a record that is not a hash, or keys
    but no schema record at all. Nothing was written.

    Example:
        >>> "another tool" in str(ForeignSchemaError.stamp("flue::{meta}", "format_version", "1"))
        True
    """

    def __init__(self, message: str, *, key: str) -> None:
        self.key = key
        super().__init__(message)

    @classmethod
    def stamp(cls, key: str, field: str, value: str) -> ForeignSchemaError:
        """Return the error of a schema record holding a field this library does not write.

        Example:
            >>> ForeignSchemaError.stamp("p::{meta}", "format_version", "1").key
            'p::{meta}'
        """
        return cls(
            f"{key} holds {field} = {value[:80]!r}, which flue-models does not write: "
            "another tool owns this prefix (the Flue TypeScript adapter, for one, also "
            "defaults to 'flue'). Nothing was written. Use another key prefix.",
            key=key,
        )

    @classmethod
    def not_a_version(cls, key: str, field: str, value: str) -> ForeignSchemaError:
        """Return the error of a version (or a bucket count) in the record that is not a
        number this library writes.

        Example:
            >>> error = ForeignSchemaError.not_a_version("p::{meta}", "schema_version", "two")
            >>> "'two'" in str(error)
            True
        """
        return cls(
            f"Field {field!r} of the schema record {key} holds {value[:80]!r}, which is not "
            "a schema version flue-models writes; nothing was read further or written. "
            "Restore the record, or use another key prefix.",
            key=key,
        )

    @classmethod
    def unversioned(cls, prefix: str, example_key: str, record_key: str) -> ForeignSchemaError:
        """Return the error of a prefix holding keys but no schema record.

        Example:
            >>> error = ForeignSchemaError.unversioned("a", "a::x", "a::{meta}")
            >>> "another key prefix" in str(error)
            True
        """
        return cls(
            f"Keys already exist under prefix {prefix!r} (for example {example_key!r}) but "
            f"there is no schema record ({record_key}), so this is not a flue-models store "
            "or its record was deleted. Nothing was written. Use another key prefix, or "
            "move those keys away.",
            key=example_key,
        )


class WritersActiveError(SchemaError):
    """Other flue-models clients are connected to the prefix whose keys must move
    (``flue-models cluster split`` refuses to move records under a running writer).

    Example:
        >>> "stop" in str(WritersActiveError("app", ["127.0.0.1:5000 flue-models:ab"]))
        True
    """

    def __init__(self, prefix: str, clients: list[str]) -> None:
        self.prefix, self.clients = prefix, clients
        super().__init__(
            f"{len(clients)} other flue-models client(s) may be using prefix {prefix!r} "
            f"({', '.join(clients[:3])}); stop every process using it, then migrate again. "
            "Nothing was moved."
        )


class MigrationFileError(SchemaError):
    """A migrations folder is malformed (a gap, a duplicate, a bad name, a file without
    ``up``), or an applied file changed since it ran (``files`` names them).

    Example:
        >>> "0003" in str(MigrationFileError("a gap: no file numbered 0003 in ./m"))
        True
    """

    def __init__(self, message: str, *, files: list[str] | None = None) -> None:
        self.files = files or []
        super().__init__(message)

    @classmethod
    def changed(cls, files: list[str]) -> MigrationFileError:
        """Return the error of applied files that changed since they ran.

        Example:
            >>> "--force" in str(MigrationFileError.changed(["app/0001_first"]))
            True
        """
        return cls(
            f"Applied migration file(s) changed since they ran: {', '.join(files)}. Restore "
            "them, or, if the change is deliberate and harmless, migrate with force=True "
            "(--force).",
            files=files,
        )


class MigrationLockError(SchemaError):
    """Another process held the migration lock for longer than we were willing to wait.

    Example:
        >>> "app:meta:lock" in str(MigrationLockError("app:meta:lock", 60.0))
        True
    """

    def __init__(self, key: str, waited: float) -> None:
        self.key = key
        super().__init__(
            f"Another process has held the migration lock {key!r} for over {waited:.0f}s. "
            "Wait for it to finish; if it died, the lock expires by itself within 30s, or "
            f"delete {key!r} once you are sure no migration runs."
        )


class MigrationFailedError(SchemaError):
    """A migration's ``up`` (or ``down``) raised; the version stays at the last completed file.

    Example:
        >>> str(MigrationFailedError("flue", 2, "add_index", 1)).startswith("Migration flue/0002")
        True
    """

    def __init__(self, set_name: str, number: int, name: str, version: int) -> None:
        self.set_name = set_name
        self.number = number
        super().__init__(
            f"Migration {set_name}/{number:04d}_{name} failed (see the cause below); the "
            f"schema version of {set_name!r} stays at {version}. Fix the cause and run "
            "`flue-models migrate` again: it resumes from there."
        )


# The server's settings ---------------------------------------------------------------


class ServerCheckError(FlueModelsError):
    """A start-up check refused the server: an eviction policy that may delete state, a
    version too old, a setting that cannot be read, a cluster that is not ready.

    ``setting`` names what was checked and ``found`` what the server has.

    Example:
        >>> ServerCheckError.eviction_policy("allkeys-lru").found
        'allkeys-lru'
    """

    def __init__(self, message: str, *, setting: str, found: str = "") -> None:
        self.setting, self.found = setting, found
        super().__init__(message)

    @classmethod
    def eviction_policy(cls, policy: str) -> ServerCheckError:
        """Return the refusal of a ``maxmemory-policy`` other than ``noeviction``.

        Example:
            >>> "noeviction" in str(ServerCheckError.eviction_policy("allkeys-lru"))
            True
        """
        return cls(
            f"The server's maxmemory-policy is {policy!r}, so it may silently delete agent "
            "state under memory pressure; flue-models needs 'noeviction'. Run "
            "`CONFIG SET maxmemory-policy noeviction` (and persist it in redis.conf).",
            setting="maxmemory-policy",
            found=policy,
        )

    @classmethod
    def version(cls, version: str, family: str = "redis") -> ServerCheckError:
        """Return the refusal of a server older than Redis 7.0 or Valkey 7.2.

        Example:
            >>> ServerCheckError.version("6.2.14").found
            'redis 6.2.14'
        """
        return cls(
            f"The server runs {family} {version}; flue-models needs Redis 7.0 or newer, or "
            "Valkey 7.2 or newer. Upgrade the server or point REDIS_URL at a newer one.",
            setting="version",
            found=f"{family} {version}",
        )

    @classmethod
    def too_few_replicas(cls, node: str, found: int, wanted: int) -> ServerCheckError:
        """Return the refusal of a primary with fewer replicas than ``wait_replicas``.

        Example:
            >>> ServerCheckError.too_few_replicas("127.0.0.1:7000", 0, 1).setting
            'connected_slaves'
        """
        return cls(
            f"connect(wait_replicas={wanted}) but the primary {node} has {found} replica(s) "
            "connected: every write would wait for replicas that are not there. Attach "
            "replicas (replicaof / CLUSTER REPLICATE) or lower wait_replicas.",
            setting="connected_slaves",
            found=str(found),
        )

    @classmethod
    def unverifiable(cls, setting: str) -> ServerCheckError:
        """Return the refusal of a required setting neither CONFIG GET nor INFO could read.

        Example:
            >>> "inspect_server=False" in str(ServerCheckError.unverifiable("maxmemory-policy"))
            True
        """
        return cls(
            f"Could not verify the server's {setting}: both CONFIG GET and INFO were denied "
            "or returned nothing. Grant the connecting user CONFIG or INFO, or, for a managed "
            "service that denies both, check the setting by hand and connect with "
            "inspect_server=False (CLI: --no-inspect).",
            setting=setting,
        )

    @classmethod
    def cluster_enabled(cls) -> ServerCheckError:
        """Return the refusal of a Cluster node reached through a one-node client.

        Example:
            >>> str(ServerCheckError.cluster_enabled()).startswith("The server has Redis Cluster")
            True
        """
        return cls(
            "The server has Redis Cluster enabled (cluster_enabled:1), but this client "
            "talks to one node; open it with flue_models.connect(), which builds a "
            "cluster client for a Cluster node.",
            setting="cluster_enabled",
            found="1",
        )

    @classmethod
    def cluster_not_ready(cls, url: str, reason: str) -> ServerCheckError:
        """Return the refusal of a cluster that cannot serve every slot yet.

        Example:
            >>> "CLUSTER INFO" in str(ServerCheckError.cluster_not_ready("redis://h:7000", "x"))
            True
        """
        return cls(
            f"{url} is a Redis Cluster node, but the cluster is not ready: {reason}. Check "
            "CLUSTER INFO (cluster_state:ok, every slot assigned) and connect again.",
            setting="cluster_state",
            found=reason,
        )


# The server refused a command --------------------------------------------------------


class CommandError(FlueModelsError):
    """The server refused a command (a wrong key type, a denied command, ...).

    Example:
        >>> CommandError("GET", "WRONGTYPE Operation against a key").reply
        'WRONGTYPE Operation against a key'
    """

    def __init__(self, command: str, reply: str) -> None:
        self.command, self.reply = command, reply
        super().__init__(f"The server refused {command}: {reply}")

    @classmethod
    def no_permission(cls, command: str, reply: str, key: str | None = None) -> CommandError:
        """Return the refusal of a command the user's ACL does not allow (``NOPERM``).

        Example:
            >>> str(CommandError.no_permission("HGETALL", "no access", "app::{meta}"))[:53]
            "The server refused HGETALL on 'app::{meta}' (NOPERM: "
        """
        where = f" on {key!r}" if key is not None else ""
        reply = reply.strip().removeprefix("NOPERM").strip()
        error = cls(command, f"NOPERM {reply}")
        error.args = (
            f"The server refused {command}{where} (NOPERM: {reply}): the user's ACL does "
            "not allow it. Give the user the key pattern of the prefix (~<prefix>::*) and "
            "the commands the security page of the docs lists, or connect as another user.",
        )
        return error


class ScriptError(CommandError):
    """A Lua script of the library was refused or failed; its name and the reply are kept.

    Example:
        >>> ScriptError("save", "ERR something").script
        'save'
    """

    def __init__(self, script: str, reply: str, message: str | None = None) -> None:
        self.script = script
        super().__init__(script, reply)
        self.args = (message or f"The {script!r} script failed: {reply}",)


class BatchCommandError(CommandError):
    """One command of a batch failed; earlier commands may already have been applied.

    Attributes:
        position: 0-based position of the first failing command in the batch.
        command: the failing command's name, e.g. ``"INCR"``.
        results: every reply of the batch, the failing ones as exceptions.

    Example:
        >>> err = BatchCommandError(1, "INCR", [True, ValueError("not an integer")])
        >>> (err.position, err.command)
        (1, 'INCR')
    """

    def __init__(self, position: int, command: str, results: list[Any]) -> None:
        self.position = position
        self.results = results
        cause = results[position]
        super().__init__(command, str(cause))
        self.args = (
            f"Command {position} of the batch ({command}, counting from 0) failed: {cause}. "
            f"{position} command(s) before it were sent and may have been applied.",
        )


# Warnings ----------------------------------------------------------------------------


class PersistenceWarning(UserWarning):
    """Issued when the server keeps nothing on disk (neither AOF nor RDB snapshots).

    Example:
        >>> issubclass(PersistenceWarning, UserWarning)
        True
    """


class SkippedRecordWarning(UserWarning):
    """A query with ``on_error("skip")`` left out a record it could not read.

    Example:
        ```python
        warnings.simplefilter("error", SkippedRecordWarning)   # make skips fatal in tests
        ```
    """
