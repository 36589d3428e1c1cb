"""The connection layer: one ``redis.asyncio`` client per :class:`Database`.

Every Redis call of the library goes through a :class:`Database` (its client, its
scripts, :meth:`Database.run_batch`), so connection-wide behaviour lives in one place:
retries, automatic pipelining, and on a Cluster node a cluster client that routes each
call by its keys' slot (:func:`open_database` chooses it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ssl
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any

from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from flue_models.client import (
    POLICY,
    ClientSettings,
    Coalescer,
    Command,
    FlueClient,
    FlueRedisCluster,
    RetryPolicy,
    adopt_client,
    make_client,
    make_cluster_client,
    not_a_reply,
    script_error,
    with_retries,
    writes,
)
from flue_models.config import (
    RedisURL,
    data_dir_from_environment,
    parse_url,
    scrub,
    split_urls,
    url_from_environment,
)
from flue_models.embedded import EmbeddedServer
from flue_models.errors import (
    AuthenticationFailedError,
    BatchCommandError,
    CommandError,
    ConfigurationError,
    ConnectionFailedError,
    ConnectionLostError,
    FlueModelsError,
    ServerCheckError,
    not_connected,
)
from flue_models.inspection import READ_AHEAD, ReadAhead, ServerReport, parse_info, read_ahead
from flue_models.keys import KeySpace, encode_segment
from flue_models.replies import reply_time
from flue_models.scripts import Scripts
from flue_models.slots import command_keys, one_slot
from flue_models.telemetry import server_attributes

#: Every connection flue-models opens carries a client name starting with this (then
#: ``:<random hex>:<prefix as base64url>``).
CLIENT_NAME_PREFIX = "flue-models"

#: The database bound by the enclosing :func:`connect` in this task (``None``: none).
#: :func:`current_database` reads it; the model layer's hot paths read it with ``.get()``.
CURRENT_DATABASE: ContextVar[Database | None] = ContextVar("flue_models_database", default=None)


def current_database() -> Database:
    """Return the database bound by the enclosing :func:`connect`.

    Raises:
        ConfigurationError: no database is open in this task.

    Example:
        ```python
        async with fm.connect() as db:
            assert current_database() is db
        ```
    """
    db = CURRENT_DATABASE.get()
    if db is None:
        raise not_connected()
    return db


def pick_database(given: Database | None = None, *, own: Database | None = None) -> Database:
    """Choose the database of an operation: the record's own, else ``given``, else the
    one bound by the enclosing :func:`flue_models.connect`.

    A record read from (or written to) one database stays with it: naming another one
    for it is refused rather than writing a copy whose version means nothing there.

    Raises:
        ConfigurationError: ``own`` and ``given`` are two different databases, or
            neither is set and no database is open in this task.

    Example:
        ```python
        db = pick_database(None)                  # the enclosing connect()
        db = pick_database(other)                 # an explicit one
        db = pick_database(other, own=record_db)  # refused unless other is record_db
        ```
    """
    if own is not None:
        if given is not None and given is not own:
            raise ConfigurationError(
                f"This record belongs to {own!r}, not {given!r}; nothing was written. To "
                "copy it, build a new record from its fields and save that."
            )
        return own
    return given if given is not None else current_database()


class Database:
    """An open connection to one Redis server under one key prefix.

    Made by :func:`connect`; use it as ``async with`` or close it with :meth:`close`.

    Attributes:
        client: the ``redis.asyncio.Redis`` client, or ``RedisCluster`` on a Cluster
            (bytes replies, never decoded).
        keys: the key space of this prefix.
        scripts: the Lua scripts, called by EVALSHA.
        embedded: the embedded server in use, or ``None`` for a server given by URL.

    Example:
        ```python
        async with fm.connect(key_prefix="myapp") as db:
            await db.client.ping()
        ```
    """

    def __init__(
        self,
        client: FlueClient,
        url: RedisURL,
        keys: KeySpace,
        *,
        client_name: str,
        embedded: EmbeddedServer | None = None,
        borrowed: bool = False,
    ) -> None:
        self.client = client
        #: The client was the application's (``connect(client=...)``): closing the
        #: database leaves its connections open.
        self.borrowed = borrowed
        self.url = url
        self.keys = keys
        self.scripts = Scripts(client)
        self._report: ServerReport | None = None
        self.embedded = embedded
        self._client_name = client_name
        client.flue_span_server = server_attributes(url.url, url.scheme, url.db)
        self._closed = False
        self._previous: Database | None = None
        #: Collections whose bucket count this database has checked against the store
        #: (:func:`flue_models.model.buckets.check_buckets`).
        self.checked_buckets: set[str] = set()
        #: The server's answers to the inspection's questions, read by the first command
        #: of :func:`open_database` on a standalone server; ``connect()`` takes them for
        #: its inspection (so it costs no round trip of its own) and clears them.
        self.first_read: ReadAhead | None = None

    @property
    def report(self) -> ServerReport | None:
        """What the start-up inspection read, or ``None`` when it was skipped.

        Example:
            ```python
            db.report.flavor   # 'valkey'
            ```
        """
        return self._report

    @report.setter
    def report(self, report: ServerReport | None) -> None:
        self._report = report
        self.client.flue_span_system = report.flavor if report is not None else "redis"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Database {self.url.display} prefix={self.keys.prefix!r} {state}>"

    @property
    def client_name(self) -> str:
        """The name every connection of this database carries (``CLIENT LIST`` shows it):
        ``flue-models:<random hex>:<the prefix, base64url>``.

        Example:
            ```python
            assert db.client_name.startswith("flue-models:")
            ```
        """
        return self._client_name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run.

        Example:
            ```python
            await db.close()
            assert db.closed
            ```
        """
        return self._closed

    def span(
        self, operation: str, collection: str | None = None, **extra: Any
    ) -> AbstractContextManager[None]:
        """Return an OpenTelemetry span for one library operation (a no-op unless the
        ``otel`` extra is installed and a tracer provider is configured).

        Example:
            ```python
            with db.span("save", "ticket"):
                ...
            ```
        """
        return self.client.span(operation, collection, **extra)

    @property
    def batches_in_order(self) -> bool:
        """Whether the commands of one :meth:`run_batch` run on the server in the order
        given: on one server (one connection, one write) they do; on a cluster each
        node's part runs on its own, in no set order between nodes.

        Example:
            ```python
            db.batches_in_order   # True on one server
            ```
        """
        return not isinstance(self.client, FlueRedisCluster)

    async def server_time(self) -> dt.datetime:
        """Return the server's clock (``TIME``) as an aware UTC datetime.

        Everything that orders or expires state takes its time from here, so the clocks
        of the client machines do not matter.

        Example:
            ```python
            now = await db.server_time()
            ```
        """
        return reply_time(await self.client.time())

    async def run_batch(
        self,
        commands: Sequence[Sequence[Any]],
        *,
        atomic: bool = False,
        unsafe: bool = False,
        return_errors: bool = False,
    ) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies in order.

        Args:
            commands: each a command and its arguments, e.g. ``("HSET", key, "f", "v")``.
            atomic: wrap the batch in MULTI/EXEC so no other client runs in between.
            unsafe: the batch is not safe to repeat after a lost reply; it is retried
                only when it never reached the server (see :mod:`flue_models.client`).
            return_errors: return a command's error reply in its place (a redis-py
                ``ResponseError``) instead of raising ``BatchCommandError``.

        Raises:
            BatchCommandError: a command failed; it names the first failing command's
                position and name, and carries every reply. Nothing fails silently.
            ConfigurationError: ``atomic`` with the slot check on, and the commands name
                keys of several Cluster slots (nothing was sent).

        Example:
            ```python
            replies = await db.run_batch([("SET", "k", "1"), ("INCR", "k")])
            assert replies == [True, 2]
            ```
        """
        client = self.client
        slot = None
        if atomic and (self.scripts.check_slots or isinstance(client, FlueRedisCluster)):
            slot = one_slot("MULTI", [key for command in commands for key in command_keys(command)])
        coalescer = client.flue_coalescer
        if not isinstance(coalescer, Coalescer):  # (a cluster's pipelines single commands)
            coalescer = None
        wait = client.flue_wait if client.flue_wait and any(map(writes, commands)) else None

        async def send() -> list[Any]:
            if coalescer is not None and not atomic and wait is None:  # shared with others
                return await coalescer.send_many([(tuple(c), {}) for c in commands])
            if isinstance(client, FlueRedisCluster):  # routed here, redirects followed
                if atomic and slot is not None:
                    await client.flue_ready()
                    return await client.flue_in_slot(slot, commands, atomic=True, wait=wait)
                replies = None if atomic else await client.flue_per_node(commands, wait=wait)
                if replies is not None:
                    return replies  # else: a command without one slot, sent below
            else:
                batch: list[Command] = [(tuple(c), {}) for c in commands]
                return await client.flue_many(batch, atomic=atomic, wait=wait)
            async with client.pipeline(transaction=atomic) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                replies = list(await pipe.execute(raise_on_error=False))
            # A cluster pipeline returns a node's lost connection (or a TRYAGAIN, or the
            # error of a command it sent again through our client) in the place of each
            # of its commands: that is the batch's failure, never a reply.
            lost = next((r for r in replies if not_a_reply(r)), None)
            if lost is not None:
                raise lost
            return replies

        name = "MULTI" if atomic else "pipeline"
        policy = self.client.flue_policy
        results: list[Any] = await with_retries(send, policy, self.url.display, name, unsafe=unsafe)
        for position, result in enumerate(results):
            if isinstance(result, Exception) and not return_errors:
                name = str(commands[position][0]).upper()
                if isinstance(result, NoPermissionError):
                    key = next(iter(command_keys(commands[position])), None)
                    raise CommandError.no_permission(name, str(result), key) from result
                raise BatchCommandError(position, name, results) from result
        return results

    async def run_scripts(
        self, calls: Sequence[tuple[str, Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """Run scripts ``(name, keys, args)`` in order in one ``MULTI`` (their keys in one
        slot) and return their replies: no other client's command, and no crash of this
        one, comes between them.

        A script that refuses with an error does not undo the ones before it, so each
        later script checks the state it acts on (a stream is closed only when its run's
        row shows the end). A script missing from the server's cache (``NOSCRIPT``, after
        a restart) is loaded and the calls from it on are sent again, in a new ``MULTI``.

        Raises:
            ScriptError: a script answered with an error (``CorruptDataError`` for a
                refusal of its check phase).
            ConfigurationError: the slot check is on and the keys span several slots.

        Example:
            ```python
            save, close = await db.run_scripts(
                [("save", save_keys, save_args), ("stream_close", close_keys, [])]
            )
            ```
        """
        scripts = [self.scripts.get(name) for name, _keys, _args in calls]
        commands = [
            ("EVALSHA", script.sha, len(keys), *keys, *args)
            for script, (_name, keys, args) in zip(scripts, calls, strict=True)
        ]
        replies: list[Any] = []
        while len(replies) < len(commands):
            start = len(replies)
            found = await self.run_batch(commands[start:], atomic=True, return_errors=True)
            missing = next((i for i, r in enumerate(found) if isinstance(r, NoScriptError)), None)
            replies += found if missing is None else found[:missing]
            for at, reply in enumerate(found, start):
                if isinstance(reply, NoScriptError):  # it did not run: sent again as EVAL,
                    # with its text (which cannot meet NOSCRIPT: this loop ends)
                    commands[at] = ("EVAL", scripts[at].text, *commands[at][2:])
        for script, reply in zip(scripts, replies, strict=True):
            if isinstance(reply, ResponseError):
                raise script_error(script.name, reply) from reply
        return replies

    async def close(self) -> None:
        """Close the connections; stop the embedded server if nobody else uses it. Idempotent.

        Example:
            ```python
            db = await fm.connect()
            await db.close()
            await db.close()   # does nothing
            ```
        """
        if self._closed:
            return
        self._closed = True
        if CURRENT_DATABASE.get() is self:  # hand the task back to the database bound before us
            previous = self._previous
            CURRENT_DATABASE.set(previous if previous is not None and not previous.closed else None)
        try:
            if self.embedded is not None:
                await self._release_embedded(self.embedded)
        finally:
            if not self.borrowed:
                await self.client.aclose()

    async def _release_embedded(self, server: EmbeddedServer) -> None:
        """Stop the embedded server when no other flue-models client is connected to it."""
        async with server.locked():
            try:  # no retries: a server that is gone needs no stopping
                no_retry = {POLICY: RetryPolicy(retries=0)}
                clients = await self.client.execute_command("CLIENT LIST", **no_retry)
            except ConnectionLostError:
                return  # already gone: nothing to stop
            others = [
                c
                for c in clients
                if str(c.get("name", "")).startswith(CLIENT_NAME_PREFIX)
                and c.get("name") != self._client_name
            ]
            if not others:
                await asyncio.to_thread(server.stop)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def bind(self) -> None:
        """Make this the database of the current task (what :func:`current_database` returns).

        :func:`flue_models.connect` binds the database it opens; :meth:`close` hands the
        task back to the database bound before.

        Example:
            ```python
            db = await open_database(None, key_prefix="myapp")
            db.bind()
            assert current_database() is db
            ```
        """
        self._previous = CURRENT_DATABASE.get()
        CURRENT_DATABASE.set(self)


async def open_database(
    url: str | Sequence[str] | None,
    *,
    key_prefix: str,
    protocol: int | None = None,
    data_dir: Path | str | None = None,
    settings: ClientSettings | None = None,
    client: Any = None,
    read_ahead: bool = True,
) -> Database:
    """Open a client on ``url``, else ``$REDIS_URL``, else the embedded server, and ask it
    its first question; or wrap ``client``, a redis-py client of the application's (see
    :func:`~flue_models.client.adopt_client`), which closing the database leaves open.

    This is the connection layer's part of :func:`flue_models.connect`: no inspection,
    no migration, nothing bound. ``read_ahead``: the first question is the inspection's
    whole pipeline (:data:`~flue_models.inspection.READ_AHEAD`), its answers kept in
    ``db.first_read`` for the inspection; ``False`` (a caller that will not inspect, so
    sends no command it does not need, e.g. one an ACL would deny and log): ``INFO
    cluster`` alone.

    Raises:
        InvalidURLError: the URL is malformed.
        ConnectionFailedError: the server does not answer.
        ConfigurationError: the embedded server could not start.

    Example:
        ```python
        db = await open_database("redis://127.0.0.1:6390/0", key_prefix="myapp")
        await db.close()
        ```
    """
    keys = KeySpace(key_prefix)
    chosen = settings or ClientSettings()
    if protocol is not None:
        chosen = dataclasses.replace(chosen, protocol=protocol)
    client_name = f"{CLIENT_NAME_PREFIX}:{uuid.uuid4().hex}:{encode_segment(keys.prefix)}"
    if client is not None:
        if url or data_dir is not None:
            raise ConfigurationError("Give connect() a url (or data_dir) or a client=, not both.")
        wrapped, shown = adopt_client(client, settings=chosen)
        db = Database(wrapped, parse_url(shown), keys, client_name=client_name, borrowed=True)
        if isinstance(wrapped, FlueRedisCluster):
            await with_retries(wrapped.initialize, wrapped.flue_policy, shown, "CLUSTER")
        else:
            await _first_read(db, read_ahead)
        return db
    given = url if url else url_from_environment()
    if given is not None:
        seeds = [parse_url(u) for u in split_urls(given)]  # every one checked first
        failures: list[ConnectionFailedError] = []
        for seed in seeds:
            db = _make_database(seed, keys, client_name, None, chosen)
            try:
                ahead = await _first_read(db, read_ahead)
            except ConnectionFailedError as exc:
                if isinstance(exc, AuthenticationFailedError) or len(seeds) == 1:
                    raise
                failures.append(exc)
                continue
            info = ahead.replies[("INFO", "cluster")]  # (an error: denied, read as no)
            return await _to_cluster_if_enabled(
                db, chosen, None if isinstance(info, Exception) else info, seeds
            )
        raise ConnectionFailedError(
            ", ".join(seed.display for seed in seeds),
            "no seed answered: " + "; ".join(str(f) for f in failures),
        )
    embedded = EmbeddedServer(data_dir if data_dir is not None else data_dir_from_environment())
    async with embedded.locked():
        record, _started = await asyncio.to_thread(embedded.ensure_running)
        db = _make_database(parse_url(record.url), keys, client_name, embedded, chosen)
        await _first_read(db, read_ahead)  # connected before the lock is released
    return db


async def _to_cluster_if_enabled(
    db: Database, settings: ClientSettings, info: Any, seeds: Sequence[RedisURL]
) -> Database:
    """Replace a standalone client by a cluster client when the server is a Cluster node
    (``info``, its ``INFO cluster``: ``cluster_enabled:1``); keep it otherwise, or when
    INFO was refused (``None``: the start-up checks then refuse what they cannot read).
    More than one seed must name a cluster."""
    if info is None or parse_info(info).get("cluster_enabled", "0").strip() != "1":
        if len(seeds) > 1:
            await db.close()
            raise ConfigurationError(
                f"Several URLs are the seeds of one cluster, but {db.url.display} is a "
                "standalone server (cluster_enabled:0); give it alone."
            )
        return db
    await db.client.aclose()
    cluster = _make_database(db.url, db.keys, db.client_name, None, settings, cluster=True)
    client = cluster.client
    assert isinstance(client, FlueRedisCluster)
    try:
        await with_retries(client.initialize, client.flue_policy, db.url.display, "CLUSTER")
    except FlueModelsError as exc:
        await client.aclose()
        raise ServerCheckError.cluster_not_ready(db.url.display, str(exc)) from exc
    return cluster


def _make_database(
    url: RedisURL,
    keys: KeySpace,
    client_name: str,
    embedded: EmbeddedServer | None,
    settings: ClientSettings,
    *,
    cluster: bool = False,
) -> Database:
    options: dict[str, Any] = {"client_name": client_name, "decode_responses": False}
    make = make_cluster_client if cluster else make_client
    client = make(url.url, display=url.display, settings=settings, **options)
    return Database(client, url, keys, client_name=client_name, embedded=embedded)


async def _first_read(db: Database, everything: bool) -> ReadAhead:
    """Ask the server the inspection's questions (:func:`~flue_models.inspection.read_ahead`:
    one round trip; ``INFO cluster`` alone unless ``everything``) once, without retries: a
    server that is not there fails start-up at once. The answers are kept for
    ``connect()``'s inspection (``db.first_read``) and returned; a command the user's
    ACL denies is answered by its error (the server answered: it is there).
    """
    assert not isinstance(db.client, FlueRedisCluster)  # (a cluster is read node by node)
    questions = READ_AHEAD if everything else (("INFO", "cluster"),)
    try:
        ahead = await read_ahead(db.client, questions, policy=RetryPolicy(retries=0))
    except (FlueModelsError, RedisError, OSError) as exc:
        if not db.borrowed:
            await db.client.aclose()
        db._closed = True
        cause = exc.__cause__ if isinstance(exc, FlueModelsError) and exc.__cause__ else exc
        raise connection_error(db.url, cause) from cause
    db.first_read = ahead
    return ahead


#: Server replies that mean "authenticate first".
_NEEDS_AUTH = ("NOAUTH", "HELLO must be called with the client already authenticated")


def connection_error(url: RedisURL, exc: BaseException) -> ConnectionFailedError:
    """Turn a failure to connect into the error that names its cause.

    Example:
        >>> from redis.exceptions import AuthenticationError
        >>> url = parse_url("redis://:pw@db:6379/0")
        >>> type(connection_error(url, AuthenticationError("WRONGPASS"))).__name__
        'AuthenticationFailedError'
    """
    reason = scrub(str(exc) or type(exc).__name__, url.url)
    if isinstance(exc, AuthenticationError) or any(text in reason for text in _NEEDS_AUTH):
        return AuthenticationFailedError(url.display, reason)
    if isinstance(exc, ResponseError) and "DB index" in reason:
        return ConnectionFailedError(
            url.display,
            f"the server refused database {url.db} ({reason.rstrip('.')})",
            "Use a database number the server has (0 to 15 unless its `databases` "
            "setting says otherwise), or a key prefix instead of a database.",
        )
    if isinstance(exc, InvalidResponse) or "Protocol error" in reason:
        return ConnectionFailedError(
            url.display,
            f"what answers is not a Redis or Valkey server ({reason.rstrip('.')})",
            "Check the port (an HTTP server answers with '<' or 'H'), or use rediss:// if "
            "the server expects TLS on this port.",
        )
    if url.scheme == "rediss" and (
        isinstance(exc, ssl.SSLError | RedisTimeoutError) or "SSL" in reason or "Timeout" in reason
    ):
        return ConnectionFailedError(
            url.display,
            f"the TLS handshake failed ({reason.rstrip('.')})",
            "The server may not speak TLS on this port: use redis:// for a plain port, or "
            "the server's tls-port; check the certificates (ssl_ca_certs=...) otherwise.",
        )
    return ConnectionFailedError(url.display, reason)
