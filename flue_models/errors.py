"""One exception hierarchy for everything flue-models raises.

Every error says what was found, what was expected and what to do next. Catch
:class:`FlueModelsError` to handle all of them.

Example:
    >>> from flue_models.errors import FlueModelsError, ClusterEnabledError
    >>> issubclass(ClusterEnabledError, FlueModelsError)
    True
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


class ConfigurationError(FlueModelsError):
    """A setting given to flue-models cannot work (a bad prefix, a bad option).

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


class EmbeddedServerError(FlueModelsError):
    """The embedded Redis server could not be found, started or stopped.

    Example:
        >>> issubclass(EmbeddedServerError, FlueModelsError)
        True
    """


class ServerCheckError(FlueModelsError):
    """Base class of the start-up checks that refuse a server.

    Example:
        >>> issubclass(EvictionPolicyError, ServerCheckError)
        True
    """


class ClusterEnabledError(ServerCheckError):
    """The server runs in Redis Cluster mode, but the client talks to it as one server
    (``inspect_server`` given a plain client); ``connect()`` builds a cluster client.

    Example:
        >>> str(ClusterEnabledError()).startswith("The server has Redis Cluster enabled")
        True
    """

    def __init__(self) -> None:
        super().__init__(
            "The server has Redis Cluster enabled (cluster_enabled:1), but this client "
            "talks to one node; open it with flue_models.connect(), which builds a "
            "cluster client for a Cluster node."
        )


class ClusterNotReadyError(ServerCheckError):
    """The server is a Redis Cluster node, but the cluster cannot serve every slot yet
    (slots not assigned, a node down, nodes that do not know each other).

    Example:
        >>> "CLUSTER INFO" in str(ClusterNotReadyError("redis://h:7000", "slots not covered"))
        True
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(
            f"{url} is a Redis Cluster node, but the cluster is not ready: {reason}. Check "
            "CLUSTER INFO (cluster_state:ok, every slot assigned) and connect again."
        )


class EvictionPolicyError(ServerCheckError):
    """The server may evict keys: ``maxmemory-policy`` is not ``noeviction``.

    Example:
        >>> EvictionPolicyError("allkeys-lru").policy
        'allkeys-lru'
    """

    def __init__(self, policy: str) -> None:
        self.policy = policy
        super().__init__(
            f"The server's maxmemory-policy is {policy!r}, so it may silently delete agent "
            "state under memory pressure; flue-models needs 'noeviction'. Run "
            "`CONFIG SET maxmemory-policy noeviction` (and persist it in redis.conf)."
        )


class ServerUnverifiableError(ServerCheckError):
    """A required server setting could not be read with either CONFIG GET or INFO.

    Example:
        >>> "inspect_server=False" in str(ServerUnverifiableError("maxmemory-policy"))
        True
    """

    def __init__(self, setting: str) -> None:
        self.setting = setting
        super().__init__(
            f"Could not verify the server's {setting}: both CONFIG GET and INFO were denied "
            "or returned nothing. Grant the connecting user CONFIG or INFO, or, for a managed "
            "service that denies both, check the setting by hand and connect with "
            "inspect_server=False (CLI: --no-inspect)."
        )


class ServerVersionError(ServerCheckError):
    """The server is older than flue-models supports (Redis 7.0, Valkey 7.2).

    Example:
        >>> ServerVersionError("6.2.14", "redis").version
        '6.2.14'
    """

    def __init__(self, version: str, family: str = "redis") -> None:
        self.version = version
        self.family = family
        super().__init__(
            f"The server runs {family} {version}; flue-models needs Redis 7.0 or newer, or "
            "Valkey 7.2 or newer. Upgrade the server or point REDIS_URL at a newer one."
        )


class PersistenceWarning(UserWarning):
    """Issued when the server keeps nothing on disk (neither AOF nor RDB snapshots).

    Example:
        >>> issubclass(PersistenceWarning, UserWarning)
        True
    """


class BatchCommandError(FlueModelsError):
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
        self.command = command
        self.results = results
        cause = results[position]
        super().__init__(
            f"Command {position} of the batch ({command}, counting from 0) failed: {cause}. "
            f"{position} command(s) before it were sent and may have been applied."
        )


class ConnectionFailedError(FlueModelsError):
    """The server could not be reached; the message shows the URL with its password masked.

    Subclasses say why when the server answered but refused: wrong credentials, a
    database it does not have, a port that does not speak Redis, a failed TLS handshake.

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


class DatabaseRefusedError(ConnectionFailedError):
    """The server has no database with the number the URL selects.

    Example:
        >>> "database 99" in str(DatabaseRefusedError("redis://db/99", 99, "out of range"))
        True
    """

    def __init__(self, display_url: str, number: int, reason: str) -> None:
        self.number = number
        super().__init__(
            display_url,
            f"the server refused database {number} ({reason.rstrip('.')})",
            "Use a database number the server has (0 to 15 unless its `databases` "
            "setting says otherwise), or a key prefix instead of a database.",
        )


class NotRedisError(ConnectionFailedError):
    """Something answered on the port, but not as a Redis or Valkey server.

    Example:
        >>> "not a Redis" in str(NotRedisError("redis://web:80/0", "Protocol error"))
        True
    """

    def __init__(self, display_url: str, reason: str) -> None:
        super().__init__(
            display_url,
            f"what answers is not a Redis or Valkey server ({reason.rstrip('.')})",
            "Check the port (an HTTP server answers with '<' or 'H'), or use rediss:// if the "
            "server expects TLS on this port.",
        )


class TLSHandshakeError(ConnectionFailedError):
    """A ``rediss://`` connection could not complete its TLS handshake.

    Example:
        >>> "redis://" in str(TLSHandshakeError("rediss://db:6379/0", "timeout"))
        True
    """

    def __init__(self, display_url: str, reason: str) -> None:
        super().__init__(
            display_url,
            f"the TLS handshake failed ({reason.rstrip('.')})",
            "The server may not speak TLS on this port: use redis:// for a plain port, or "
            "the server's tls-port; check the certificates (ssl_ca_certs=...) otherwise.",
        )


class ConnectionLostError(FlueModelsError):
    """The server went away during a call and the retries did not bring it back.

    ``unsafe`` is True when the command was not safe to repeat and may have run before
    the connection dropped: read the state to tell.

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
        self, display_url: str, command: str, reason: str, *, unsafe: bool = False
    ) -> None:
        self.url, self.command, self.unsafe = display_url, command, unsafe
        if unsafe:
            outcome = (
                f"{command} is not safe to repeat, so it was not retried; it may or may not "
                "have run: read the state to tell"
            )
        else:
            outcome = "the retries did not reach it; check that the server is up"
        super().__init__(
            f"Lost the connection to the Redis server at {display_url} "
            f"({reason.rstrip('.')}): {outcome}."
        )


class ServerTimeoutError(ConnectionLostError):
    """The server did not answer in time (``connect(timeout=...)``), after the retries.

    Example:
        >>> issubclass(ServerTimeoutError, ConnectionLostError)
        True
    """


class PoolExhaustedError(FlueModelsError):
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


class CommandError(FlueModelsError):
    """The server refused a command (a wrong key type, a denied command, ...).

    Example:
        >>> CommandError("GET", "WRONGTYPE Operation against a key").reply
        'WRONGTYPE Operation against a key'
    """

    def __init__(self, command: str, reply: str) -> None:
        self.command, self.reply = command, reply
        super().__init__(f"The server refused {command}: {reply}")


class ScriptError(FlueModelsError):
    """A Lua script of the library was refused or failed; its name and the reply are kept.

    Example:
        >>> ScriptError("save", "ERR something").script
        'save'
    """

    def __init__(self, script: str, reply: str, message: str | None = None) -> None:
        self.script = script
        self.reply = reply
        super().__init__(message or f"The {script!r} script failed: {reply}")


class CrossSlotError(FlueModelsError):
    """One script call or MULTI named keys of several Redis Cluster hash slots.

    A cluster refuses such a call (``CROSSSLOT``); the slot check
    (``FLUE_CHECK_SLOTS=1``, on in the test suite) refuses it on a standalone server too,
    before sending it, so a key layout mistake fails without a cluster.

    Example:
        >>> str(CrossSlotError("save", {"a": 15495, "b": 3300}))[:39]
        "The 'save' call names keys of 2 Cluster"
    """

    def __init__(self, call: str, slots: dict[str, int]) -> None:
        self.call, self.slots = call, slots
        shown = ", ".join(f"{key} (slot {slot})" for key, slot in list(slots.items())[:4])
        super().__init__(
            f"The {call!r} call names keys of {len(set(slots.values()))} Cluster hash slots "
            f"({shown}); a script or MULTI may touch one slot only. Nothing was sent."
        )


class CorruptDataError(ScriptError):
    """A key the library writes holds something it did not write; nothing was written.

    The script checks every key it will write before its first write, so the store is
    left exactly as it was.

    Example:
        >>> issubclass(WrongKeyTypeError, CorruptDataError)
        True
    """


class WrongKeyTypeError(CorruptDataError):
    """A key the library keeps as one Redis type holds another.

    Example:
        >>> "a string" in str(WrongKeyTypeError("save", "p:t:all", "string", "zset"))
        True
    """

    def __init__(self, script: str, key: str, found: str, wanted: str) -> None:
        self.key, self.found, self.wanted = key, found, wanted
        super().__init__(
            script,
            f"{found} where {wanted}",
            f"Key {key!r} is a {found}, where flue-models keeps a {wanted}; nothing was "
            "written. Something else wrote it: inspect it (TYPE, DUMP), move it away, then "
            "rebuild what it held (a migration's ctx.rebuild_indexes for an index).",
        )


class CorruptValueError(CorruptDataError):
    """A counter or field the library parses as a number holds something else.

    Example:
        >>> "'seven'" in str(CorruptValueError("save", "p:t:x", "version", "seven"))
        True
    """

    def __init__(self, script: str, key: str, field: str, value: str) -> None:
        self.key, self.field, self.value = key, field, value
        super().__init__(
            script,
            f"{field}={value!r}",
            f"Field {field!r} of key {key!r} holds {value[:80]!r}, not a number; nothing was "
            "written. Something else wrote it: restore it from the record it belongs to, "
            "or delete and re-create that record.",
        )


class OutOfMemoryError(FlueModelsError):
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


class NotConnectedError(FlueModelsError):
    """A model was used with no database bound, or after its database was closed.

    Example:
        >>> "connect()" in str(NotConnectedError())
        True
    """

    def __init__(self, detail: str = "no database is bound to this task") -> None:
        super().__init__(
            f"Not connected: {detail}. Open one with `async with flue_models.connect() as db:` "
            "(or `db = await flue_models.connect()`), or bind one with Model.using(db)."
        )


class SchemaError(FlueModelsError):
    """Base class of the errors of the schema record and migrations.

    Example:
        >>> issubclass(SchemaTooNewError, SchemaError)
        True
    """


class SchemaStampError(SchemaError):
    """A schema version in the record is not a number this library writes.

    Example:
        >>> "'two'" in str(SchemaStampError("p:meta", "schema_version", "two"))
        True
    """

    def __init__(self, key: str, field: str, value: str) -> None:
        self.key, self.field, self.value = key, field, value
        super().__init__(
            f"Field {field!r} of the schema record {key} holds {value[:80]!r}, which is not "
            "a schema version flue-models writes; nothing was read further or written. "
            "Restore the record, or use another key prefix."
        )


class ForeignSchemaError(SchemaError):
    """The schema record holds a stamp another tool wrote (or is not a hash at all).

    Example:
        >>> "another tool" in str(ForeignSchemaError("flue::meta", "format_version", "1"))
        True
    """

    def __init__(self, key: str, field: str, value: str) -> None:
        self.key, self.field, self.value = key, field, value
        super().__init__(
            f"{key} holds {field} = {value[:80]!r}, which flue-models does not write: "
            "another tool owns this prefix (the Flue TypeScript adapter, for one, also "
            "defaults to 'flue'). Nothing was written. Use another key prefix."
        )


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
    """The store was written in an older, pre-release layout that this version refuses.

    flue-models is unreleased: its own migration set is one file whose number is the
    stored layout's version, and a store of an older layout has no upgrade path. Raised
    by ``connect()`` and ``flue-models migrate`` before anything is read or written.

    Example:
        >>> "pre-release" in str(SchemaLayoutError("app", 4, 9))
        True
    """

    def __init__(self, prefix: str, stored: int, needed: int) -> None:
        self.prefix, self.stored, self.needed = prefix, stored, needed
        super().__init__(
            f"The store under prefix {prefix!r} is in the pre-release layout {stored}; this "
            f"flue-models reads layout {needed} only and does not upgrade older ones. Nothing "
            "was read or written: export what you need with the flue-models that wrote it, "
            "then delete the prefix's keys (or use another key prefix)."
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


class BucketCountError(SchemaError):
    """A model declares another number of buckets (``Meta.buckets``) than its collection's
    records are stored in; reading it so would miss records, writing would scatter them.

    Example:
        >>> "cluster split" in str(BucketCountError("app", "ticket", stored=1, declared=16))
        True
    """

    def __init__(self, prefix: str, collection: str, *, stored: int, declared: int) -> None:
        self.prefix, self.collection = prefix, collection
        self.stored, self.declared = stored, declared
        super().__init__(
            f"Collection {collection!r} under prefix {prefix!r} is stored in {stored} "
            f"bucket(s) but its model declares Meta.buckets = {declared}. Nothing was read "
            f"or written. Stop its writers and run `flue-models cluster split {collection} "
            f"--buckets {declared}` on a standalone server, or declare {stored} again (for "
            "a collection of flue-models' own, `flue-models migrate`)."
        )


class PartitionKeyError(SchemaError):
    """A model places its records by another field (``Meta.partition_by``) than its
    collection's records are stored by; reading so would miss records, writing would
    scatter them.

    Example:
        >>> "--partition-by tenant" in str(PartitionKeyError("app", "order", "id", "tenant", 16))
        True
    """

    def __init__(
        self, prefix: str, collection: str, stored: str, declared: str, buckets: int
    ) -> None:
        self.prefix, self.collection = prefix, collection
        self.stored, self.declared = stored, declared
        super().__init__(
            f"Collection {collection!r} under prefix {prefix!r} keeps its records in buckets "
            f"by {stored!r} but its model declares Meta.partition_by = {declared!r}. Nothing "
            f"was read or written. Stop its writers and run `flue-models cluster split "
            f"{collection} --buckets {buckets} --partition-by {declared}` on a standalone "
            f"server, or declare {stored!r} again."
        )


class UnversionedDataError(SchemaError):
    """Keys exist under the prefix but no schema record does: data this library did not write.

    Example:
        >>> "another key prefix" in str(UnversionedDataError("app", "app:x", "app:meta"))
        True
    """

    def __init__(self, prefix: str, example_key: str, record_key: str) -> None:
        self.prefix = prefix
        super().__init__(
            f"Keys already exist under prefix {prefix!r} (for example {example_key!r}) but "
            f"there is no schema record ({record_key}), so this is not a flue-models store "
            "or its record was deleted. Nothing was written. Use another key prefix, or "
            "move those keys away."
        )


class MigrationFileError(SchemaError):
    """A migrations folder is malformed: a gap, a duplicate, a bad name, a file without ``up``.

    Example:
        >>> "0003" in str(MigrationFileError("a gap: no file numbered 0003 in ./m"))
        True
    """


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


class MigrationChecksumError(SchemaError):
    """An applied migration file has changed since it was applied.

    Example:
        >>> "--force" in str(MigrationChecksumError(["app/0001_first"]))
        True
    """

    def __init__(self, files: list[str]) -> None:
        self.files = files
        super().__init__(
            f"Applied migration file(s) changed since they ran: {', '.join(files)}. Restore "
            "them, or, if the change is deliberate and harmless, migrate with force=True "
            "(--force)."
        )
