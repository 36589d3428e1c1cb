"""Start-up: ``connect()`` opens a client, checks the server, migrates, then binds.

The sequence (DESIGN.md, "Start-up sequence"): client (``url``, ``$REDIS_URL`` or the
embedded server) → PING → :func:`~flue_models.inspection.inspect_server` → migrations
(:func:`~flue_models.schema.migrate`) → bound to the task. It lives above the schema
layer so that the connection layer below never imports what sits on top of it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from flue_models import inspection, schema
from flue_models.client import ClientSettings, RetryPolicy
from flue_models.connection import Database, open_database
from flue_models.errors import ServerCheckError
from flue_models.model.base import registered_specs
from flue_models.model.buckets import check_collections
from flue_models.schema import MigrationSet


class Connecting:
    """What :func:`connect` returns: await it, or use it with ``async with``.

    Example:
        ```python
        db = await fm.connect()              # close it yourself
        async with fm.connect() as db:       # closed on exit
            ...
        ```
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._db: Database | None = None

    def __await__(self) -> Generator[Any, None, Database]:
        return _start(**self._options).__await__()

    async def __aenter__(self) -> Database:
        self._db = await _start(**self._options)
        return self._db

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.close()


def connect(
    url: str | Sequence[str] | None = None,
    *,
    key_prefix: str = "flue",
    inspect_server: bool = True,
    protocol: int | None = None,
    data_dir: Path | str | None = None,
    migrate: bool = True,
    migrations: Sequence[MigrationSet] = (),
    check_schema: bool = True,
    pool_size: int = 50,
    pool_timeout: float = 10.0,
    timeout: float | None = 30.0,
    retry: RetryPolicy | None = None,
    auto_pipeline: bool = True,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
    client: Any = None,
) -> Connecting:
    """Connect to Redis and check that the server can keep agent state safely.

    The server is, in order: ``url``, then ``$REDIS_URL``, then an embedded
    ``redis-server`` with its data in ``data_dir`` (default ``$FLUE_DATA_DIR`` or
    ``./.flue/redis``).

    Args:
        url: a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; or, for a Cluster,
            several seed URLs (a list, or one text with commas, as ``$REDIS_URL`` may
            hold): the first that answers is used (the client learns every node of the
            cluster from it), so one dead node does not stop a process from starting.
        key_prefix: the namespace of every key (trailing ``:`` stripped).
        inspect_server: check version, Cluster and eviction policy at start-up. Turn it
            off only for a managed service that denies both CONFIG and INFO, after
            checking those settings by hand.
        protocol: 2 or 3 for RESP2 or RESP3; ``None`` keeps redis-py's default.
        data_dir: the embedded server's data directory.
        migrate: bring the schema up to date (see :func:`flue_models.schema.migrate`);
            with ``False`` the store is used as it is, after checking its schema record.
        migrations: the application's migration sets, applied after the built-in one.
        check_schema: with ``migrate=False``, refuse a missing, foreign, unparsable or
            newer schema record (:func:`flue_models.schema.check_schema`); ``False`` skips
            even that, for maintenance tools that inspect or migrate the store themselves.
        pool_size: connections at most; more concurrent calls wait for a free one.
        pool_timeout: seconds a call waits for a free connection before
            ``PoolExhaustedError``.
        timeout: seconds a reply (or a connect) may take before ``ConnectionLostError``;
            ``None`` waits forever.
        retry: how calls are retried after a connection error, a timeout or a
            cluster's refusal (default :class:`~flue_models.client.RetryPolicy`: about 3 s
            of backoff with jitter on one server; on a cluster
            :meth:`~flue_models.client.RetryPolicy.for_cluster`: up to 20 s, which covers
            the promotion of a replica with the default ``cluster-node-timeout``).
            Calls that are not safe to repeat are retried only when they never reached
            the server.
        auto_pipeline: the commands that concurrent tasks send while one is in flight
            go out together as one pipeline, each caller getting its own reply or error
            (:mod:`flue_models.client`); ``False`` sends each on its own.
        wait_replicas: replicated durability, opt in: after each write, ``WAIT`` for this
            many replicas on the connection that wrote (sent in the same round trip);
            fewer within ``wait_timeout`` raise ``NotReplicatedError`` (the write
            stands). A failover then loses no write acknowledged without that error.
        wait_timeout: seconds a write waits for its replicas.
        client: a ``redis.asyncio.Redis`` or ``RedisCluster`` the application made,
            instead of ``url``: its connections (and a cluster's slot map) are used as
            they are, its own settings (address, credentials, TLS, timeouts, pool,
            protocol) apply, and closing the database leaves it open. It must not decode
            responses (``decode_responses=False``, redis-py's default).

    Raises:
        InvalidURLError: the URL is malformed.
        ConfigurationError: a pool, timeout or retry setting is out of range, or the
            embedded server could not start.
        ConnectionFailedError: the server does not answer.
        ServerCheckError: the server could lose state (``setting`` and the message say
            why).
        SchemaError: the stored schema is newer than this installation, the prefix holds
            data that is not ours, a migration failed, (with ``migrate=False``) the
            prefix was never migrated, or a model declares another ``Meta.buckets``
            than its collection is stored in (a subclass says which).

    Example:
        ```python
        import flue_models as fm

        async with fm.connect(key_prefix="myapp") as db:
            print(db.report)
        ```
    """
    return Connecting(
        url=url,
        client=client,
        key_prefix=key_prefix,
        inspect_server=inspect_server,
        data_dir=data_dir,
        migrate=migrate,
        migrations=tuple(migrations),
        check_schema=check_schema,
        settings=ClientSettings(
            protocol=protocol,
            retry=retry,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            timeout=timeout,
            auto_pipeline=auto_pipeline,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        ),
    )


async def _start(
    *,
    url: str | Sequence[str] | None,
    client: Any,
    key_prefix: str,
    inspect_server: bool,
    data_dir: Path | str | None,
    migrate: bool,
    migrations: tuple[MigrationSet, ...],
    check_schema: bool,
    settings: ClientSettings,
) -> Database:
    db = await open_database(
        url,
        key_prefix=key_prefix,
        data_dir=data_dir,
        settings=settings,
        client=client,
        read_ahead=inspect_server,
    )
    try:
        ahead, db.first_read = db.first_read, None  # read by open_database, used once
        if inspect_server:
            db.report = await inspection.inspect_server(db.client, ahead=ahead)
        if settings.wait_replicas:
            await _check_replicas(db, settings.wait_replicas)
        if migrate or check_schema:
            # One read of the schema record serves the schema check and the bucket check
            # (read again for the latter when a migration changed it).
            record: dict[str, str] | None = await schema.read_record(db)
            if migrate:
                if await schema.migrate(db, migrations, record=record):
                    record = None
            else:
                await schema.check_schema(db, migrations, record=record)
            # Every model declared by now; later ones at first use.
            await check_collections(db, registered_specs(), record=record)
    except BaseException:
        await db.close()
        raise
    db.bind()
    return db


async def _check_replicas(db: Database, wanted: int) -> None:
    """Refuse a primary with fewer connected replicas than ``wait_replicas`` asks for (read
    from the start-up inspection's report; read here only when it was skipped)."""
    report = db.report or await inspection.read_server(db.client)
    for primary in report.primaries or (report,):
        replicas = len(primary.replicas or ())  # unreadable counts as none: refused
        if replicas < wanted:
            raise ServerCheckError.too_few_replicas(
                primary.node or db.url.display, replicas, wanted
            )
