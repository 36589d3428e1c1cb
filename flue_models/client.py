"""The Redis client every flue-models call goes through: retries, a waiting pool, one error
hierarchy.

:class:`FlueRedis` is a ``redis.asyncio.Redis`` whose ``execute_command`` (the path of
every single command, script call and blocking read) retries connection errors and
timeouts with exponential backoff and full jitter (:class:`RetryPolicy`) and turns every
redis-py error into a :class:`~flue_models.errors.FlueModelsError`: a lost connection
into :class:`~flue_models.errors.ConnectionLostError`, a timeout into
:class:`~flue_models.errors.ConnectionLostError`, an empty pool into
:class:`~flue_models.errors.PoolExhaustedError`, a refused command into
:class:`~flue_models.errors.CommandError`, each with the redis-py error as its cause.

A command that is not safe to repeat (an append without an idempotency key, say) is sent
with ``flue_unsafe=True``: it is retried only when it provably never reached the server
(the connection could not be made, or the server answered ``LOADING``); otherwise the
error says it may or may not have run.

redis-py's own retry is turned off (it would repeat every command, unsafe ones included),
and its pool is a :class:`FluePool` (redis-py's ``BlockingConnectionPool`` with a fast
path): a caller waits for a free connection up to the pool timeout instead of failing at
a fixed count, and pays nothing for the waiting when a connection is free.

**Automatic pipelining**: while a command of the client is in flight, the commands other
tasks send meanwhile are queued and go out together, at the end of the event loop's
turn (or at once when :data:`FLUSH_AT` are queued), as one pipeline on one connection;
each caller gets its own reply or its own error (the same ones it would get alone), and
its retries are its own. A lone caller's command is sent at once, as without it.
Blocking reads and commands that change a connection's state are never queued.
``ClientSettings(auto_pipeline=False)`` turns it off. On a cluster, single commands are
queued by the primary of their slot, one pipeline per primary (:class:`NodeCoalescer`).

:class:`FlueRedisCluster` is the same on a Redis Cluster (``RedisCluster``), with its
own routing: a command, a batch (one pipeline per primary) or a ``MULTI`` goes to the
primary of its slot in one write and follows ``MOVED``, ``ASK`` and ``TRYAGAIN`` there
(:meth:`FlueRedisCluster.flue_in_slot`); only commands without a slot go through
redis-py's own routing.

Example:
    ```python
    client = make_client("redis://127.0.0.1:6379/0", display="...", settings=ClientSettings())
    await client.execute_command("XADD", key, "*", "d", "x", flue_unsafe=True)
    ```
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from redis._parsers import response_callbacks
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.cluster import PRIMARY
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    ConnectionError as RedisConnectionError,
    ExecAbortError,
    InvalidResponse,
    MaxConnectionsError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError as RedisOutOfMemoryError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError as RedisTimeoutError,
    TryAgainError,
)
from redis.maint_notifications import MaintNotificationsConfig

from flue_models.errors import (
    CommandError,
    ConfigurationError,
    ConnectionLostError,
    CorruptDataError,
    FlueModelsError,
    InvalidURLError,
    NotReplicatedError,
    OutOfMemoryError,
    PoolExhaustedError,
    ScriptError,
)
from flue_models.slots import command_keys, slot_of
from flue_models.telemetry import UNSET_READABLE, ProxyTracerProvider, operation_span, trace

#: The option that marks a command as not safe to repeat after a lost reply.
UNSAFE = "flue_unsafe"
#: Seconds a pooled connection may idle before it is pinged ahead of its next command.
HEALTH_CHECK_SECONDS = 15
#: The option that gives one command another :class:`RetryPolicy` (e.g. none at start-up).
POLICY = "flue_policy"
#: The option that takes a command's reply as the server sent it, without redis-py's
#: callback (in a batch of :meth:`FlueRedis.flue_many`): ``INFO``'s, parsed into a dict
#: line by line in Python, costs more than the command when the caller reads it again.
RAW = "flue_raw"


@dataclass(frozen=True)
class RetryPolicy:
    """How commands are retried after a connection error, a timeout, or a cluster's
    refusal (a slot being moved, a failover under way).

    Attributes:
        retries: retries after the first try (0: none).
        base: the first backoff, in seconds; each retry doubles it.
        cap: the longest backoff, in seconds.
        budget: seconds from the first failure during which retries go on past
            ``retries`` (``None``: ``retries`` alone bound them). A retry is made only
            while its wait ends within the budget.

    The wait before retry ``n`` is uniform in ``[0, min(cap, base * 2**n)]`` ("full
    jitter"), so clients that lost the same server do not come back in step. The default
    on one server rides out about 3 seconds of unavailability (a restart); on a cluster
    the default is :meth:`for_cluster`, which rides out a failover.

    Example:
        ```python
        await fm.connect(retry=RetryPolicy(retries=10, cap=5.0))
        await fm.connect(retry=RetryPolicy(budget=60.0))   # keep trying for a minute
        ```
    """

    retries: int = 6
    base: float = 0.05
    cap: float = 2.0
    budget: float | None = None

    def __post_init__(self) -> None:
        if type(self.retries) is not int or self.retries < 0:
            raise ConfigurationError(
                f"RetryPolicy.retries must be 0 or more, not {self.retries!r}."
            )
        if not (self.base > 0 and self.cap >= self.base):
            raise ConfigurationError("RetryPolicy needs 0 < base <= cap (seconds).")
        if self.budget is not None and not (
            isinstance(self.budget, int | float) and self.budget > 0
        ):
            raise ConfigurationError(
                f"RetryPolicy.budget must be positive seconds or None, not {self.budget!r}."
            )

    @classmethod
    def for_cluster(cls) -> RetryPolicy:
        """The default on a cluster: retries for up to :data:`FAILOVER_BUDGET` seconds,
        each wait at most 1 s, so a call outlives the promotion of a replica with the
        servers' default ``cluster-node-timeout`` (15 s: the primary is declared failed
        after it, and a replica is elected within about 2 s more) and goes through
        within about a second of it.

        Example:
            >>> RetryPolicy.for_cluster().budget
            20.0
        """
        return cls(cap=1.0, budget=FAILOVER_BUDGET)

    def delay(self, attempt: int) -> float:
        """Return the wait before retry number ``attempt`` (counted from 0).

        Example:
            >>> 0 <= RetryPolicy(base=0.1, cap=1.0).delay(5) <= 1.0
            True
        """
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 32)))

    def allows(self, attempt: int, elapsed: float, wait: float) -> bool:
        """Whether retry number ``attempt`` (from 0) may be made after ``elapsed``
        seconds since the first try, waiting ``wait`` seconds first.

        ``elapsed`` counts from the first failure.

        Example:
            >>> RetryPolicy(retries=2).allows(2, 0.1, 0.1)
            False
            >>> RetryPolicy(retries=2, budget=10.0).allows(9, 5.0, 1.0)
            True
        """
        if attempt < self.retries:
            return True
        return self.budget is not None and elapsed + wait <= self.budget


#: Seconds the cluster's default policy keeps retrying (:meth:`RetryPolicy.for_cluster`).
FAILOVER_BUDGET = 20.0


@dataclass(frozen=True)
class ClientSettings:
    """How the client of one database talks to its server (``connect()``'s options).

    Attributes:
        protocol: 2 or 3 for RESP2 or RESP3; ``None`` keeps redis-py's default.
        retry: retries after connection errors, timeouts and a cluster's refusals
            (``None``: :class:`RetryPolicy` on one server, :meth:`RetryPolicy.for_cluster`
            on a cluster).
        pool_size: connections at most; more concurrent calls wait for one.
        pool_timeout: seconds a call waits for a free connection before
            ``PoolExhaustedError``.
        timeout: seconds a reply (or a connect) may take before ``ConnectionLostError``;
            ``None`` waits forever.
        auto_pipeline: send the commands concurrent tasks issue in one loop turn as one
            pipeline (see the module's text).
        wait_replicas: replicas each write waits for (``WAIT``, on the connection that
            wrote); 0: none.
        wait_timeout: seconds a write waits for them before ``NotReplicatedError``.

    Example:
        ```python
        ClientSettings(pool_size=200, timeout=5.0)
        ```
    """

    protocol: int | None = None
    retry: RetryPolicy | None = None
    pool_size: int = 50
    pool_timeout: float = 10.0
    timeout: float | None = 30.0
    auto_pipeline: bool = True
    wait_replicas: int = 0
    wait_timeout: float = 1.0


class ClosedUnderUsError(RedisConnectionError):
    """redis-py's asyncio connection was closed by another task while this one was still
    connecting on it: the command was never sent.

    A cluster client that refreshes its slot map (after ``MOVED``, or a node's lost
    connection) disconnects connections other tasks are opening; their handshake then
    fails inside redis-py with ``AttributeError: 'NoneType' object has no attribute
    'writelines'`` (a slot moved under six writers showed it about once in eight runs).

    Example:
        >>> never_sent(ClosedUnderUsError("closed by another task"))
        True
    """


def closed_under_us(exc: AttributeError) -> bool:
    """Whether ``exc`` is redis-py's connection finding its reader or writer gone (see
    :class:`ClosedUnderUsError`), and not a bug of ours or of the caller's.

    Example:
        >>> closed_under_us(AttributeError("'NoneType' object has no attribute 'x'"))
        False
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1].filename.replace("\\", "/") if frames else ""
    return where.endswith("redis/asyncio/connection.py") and str(exc).startswith(
        "'NoneType' object has no attribute"
    )


#: A cluster's refusals of a command it did not run: a slot half-moved (``TRYAGAIN``), a
#: cluster down for now (``CLUSTERDOWN``), and redis-py's ``ClusterError`` ("TTL
#: exhausted"), which it raises only after every attempt was redirected (``MOVED``,
#: ``ASK``) or refused (``TRYAGAIN``): none ran (a slot mid-move for longer than its
#: own retries, about 0.4 s).
CLUSTER_REFUSED = (TryAgainError, ClusterDownError, ClusterError)
#: The failures retried when the command may be sent again: a lost connection, a
#: timeout, a cluster's refusal. A pipeline may also return them in a command's place.
RETRIED = (RedisConnectionError, RedisTimeoutError, *CLUSTER_REFUSED)
#: What sends a command of a batch elsewhere or again: a cluster's redirects
#: (``MOVED``, ``ASK``) and every failure of :data:`RETRIED`.
REDIRECTED = (MovedError, AskError, *RETRIED)


_RESHARDING = (
    "a slot of the cluster is being moved (resharding); nothing of the call ran, retry it "
    "once the move ends, or raise connect(retry=...)"
)
_FAILOVER = (
    "the cluster is down or failing over (a replica being promoted); nothing of the call "
    "ran, retry it, or raise connect(retry=...) to cover the cluster's failover time"
)


def not_a_reply(value: Any) -> bool:
    """Whether a value in a batch's replies is the batch's failure, not a command's reply
    or its refusal: a lost connection, a cluster's refusal or redirect, or an error of the
    library's own (redis-py's cluster pipeline sends a redirected command again through
    our ``execute_command``). Such a value is raised, never read as data.

    Example:
        >>> not_a_reply(ResponseError("WRONGTYPE")), not_a_reply(RedisConnectionError("x"))
        (False, True)
    """
    if not isinstance(value, BaseException):
        return False
    return isinstance(value, (*REDIRECTED, FlueModelsError)) or not isinstance(value, ResponseError)


def never_sent(exc: BaseException) -> bool:
    """Whether a connection error proves the command never reached the server.

    True when the connection could not be made, or when the server answered ``LOADING``
    (it refuses every command while it loads its data).

    Example:
        >>> never_sent(RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Refused."))
        True
        >>> never_sent(RedisConnectionError("Connection closed by server."))
        False
    """
    text = str(exc)
    refused = (BusyLoadingError, ClosedUnderUsError, *CLUSTER_REFUSED)  # before running
    return isinstance(exc, refused) or "connecting to" in text


def translate(
    exc: RedisError | RedisClusterException, display: str, command: str, *, unsafe: bool = False
) -> FlueModelsError:
    """Turn a redis-py error into the library's error for it (the caller chains it).

    Example:
        >>> type(translate(RedisTimeoutError("Timeout reading"), "redis://h", "GET")).__name__
        'ConnectionLostError'
    """
    reason = str(exc) or type(exc).__name__
    node = getattr(exc, "flue_node", None)
    if node is not None:
        display = f"{node} (a node of the cluster at {display})"
    if isinstance(exc, RedisTimeoutError):
        return ConnectionLostError(display, command, reason, unsafe=unsafe, timed_out=True)
    if isinstance(exc, MaxConnectionsError) or (
        isinstance(exc, RedisConnectionError) and "No connection available" in reason
    ):
        return PoolExhaustedError(display, reason)
    if isinstance(exc, CLUSTER_REFUSED):  # retried; after that, lost
        if isinstance(exc, TryAgainError):
            reason, advice = f"TRYAGAIN {reason}", _RESHARDING
        elif isinstance(exc, ClusterDownError):
            reason, advice = f"CLUSTERDOWN {reason}", _FAILOVER
        else:
            advice = _RESHARDING
        return ConnectionLostError(
            display, command, reason, unsafe=unsafe, advice=advice, refused=True
        )
    if isinstance(exc, InvalidResponse) or (
        isinstance(exc, RedisConnectionError)
        and not isinstance(exc, AuthenticationError | AuthorizationError)
    ):  # gone, or not speaking Redis (a protocol error): the connection is lost either way
        return ConnectionLostError(display, command, reason, unsafe=unsafe)
    if isinstance(exc, NoPermissionError):
        return CommandError.no_permission(command, reason)
    return CommandError(command, reason)


async def with_retries(
    call: Any, policy: RetryPolicy, display: str, command: str, *, unsafe: bool = False
) -> Any:
    """Await ``call()`` until it succeeds, retrying what ``policy`` and ``unsafe`` allow.

    Raises:
        ConnectionLostError, PoolExhaustedError, CommandError: with
            the redis-py error as the cause.

    Example:
        ```python
        replies = await with_retries(pipe.execute, policy, display, "MULTI")
        ```
    """
    attempt = 0
    failed_at = 0.0  # read at the first failure: a call that succeeds pays for no clock
    while True:
        try:
            try:
                return await call()
            except AttributeError as exc:
                if not closed_under_us(exc):
                    raise
                raise ClosedUnderUsError(
                    f"the connection was closed under the command ({exc})"
                ) from exc
        except NoScriptError:
            raise  # the script caller reloads it
        except (RedisError, RedisClusterException) as exc:
            may_have_run = unsafe and not never_sent(exc)
            error = translate(exc, display, command, unsafe=may_have_run)
            # Retried: a lost connection or a timeout (not a full pool, a refused login, a
            # peer that does not speak Redis), when the command may be sent again; on a
            # cluster, a slot being moved (TRYAGAIN) or a cluster that is down for now.
            retriable = isinstance(error, ConnectionLostError) and isinstance(exc, RETRIED)
            if not retriable or may_have_run:
                raise error from exc
            now = time.monotonic()
            failed_at = failed_at or now
            wait = policy.delay(attempt)
            if not policy.allows(attempt, now - failed_at, wait):
                raise error from exc
            await asyncio.sleep(wait)
            attempt += 1


#: Commands that block, or change the state of their connection: never queued.
UNQUEUED = frozenset(
    {
        "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
        "WAIT", "WAITAOF", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT", "AUTH",
        "HELLO", "RESET", "CLIENT", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR",
        "QUIT", "SHUTDOWN", "DEBUG", "SYNC", "PSYNC", "READONLY", "READWRITE",
    }
)  # fmt: skip


def queueable(args: tuple[Any, ...]) -> bool:
    """Whether a command may share a pipeline with other callers' commands.

    Example:
        >>> queueable(("HGETALL", "k")), queueable(("XREAD", "BLOCK", 0, "STREAMS", "k", "$"))
        (True, False)
    """
    name = str(args[0]).upper() if args else ""
    if name in UNQUEUED:
        return False
    if name in ("XREAD", "XREADGROUP"):  # blocking only with BLOCK
        words = (a.decode("latin-1") if isinstance(a, bytes) else str(a) for a in args[1:])
        return all(word.upper() != "BLOCK" for word in words)
    return True


Command = tuple[tuple[Any, ...], dict[str, Any]]


#: Set while :meth:`FlueRedis.flue_many` reads a batch's replies under deadlines of its
#: own: a reply is then read without one of its own (see :meth:`TimedSend.read_response`).
_BATCH_DEADLINE: ContextVar[bool] = ContextVar("flue_batch_deadline", default=False)
#: Replies of a batch read under one deadline before it is renewed (each renewal gives
#: ``socket_timeout`` again, so a slow server still gets it for each stretch of replies).
DEADLINE_STRETCH = 100


class TimedSend:
    """A connection mixin: a command is written under ``asyncio.timeout`` instead of
    redis-py's ``asyncio.wait_for``, the same deadline (``socket_timeout``) and the same
    errors, without a task per command (Python 3.11's ``wait_for`` runs the write in a
    new task, two more turns of the event loop for every command sent), and without a
    timer at all when the socket takes the whole command at once. The replies of a batch
    are read under the batch's deadline (:meth:`FlueRedis.flue_many`).

    Example:
        ```python
        pool.connection_class = timed_send(pool.connection_class)
        ```
    """

    async def _connect(self) -> None:
        """Open the socket, then count the connection as just checked: redis-py's first
        health check is due at once on a new connection, so its handshake began with a
        ``PING`` round trip on a socket opened a moment before.

        Example:
            ```python
            await connection.connect()   # HELLO, CLIENT SETNAME, ...: no PING first
            ```
        """
        me = cast(Any, self)
        await super()._connect()  # type: ignore[misc]
        if me.health_check_interval:
            me.next_health_check = asyncio.get_running_loop().time() + me.health_check_interval

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Write ``command`` (packed) on the connection within ``socket_timeout``.

        Example:
            ```python
            await connection.send_packed_command(connection.pack_command("PING"))
            ```
        """
        me = cast(Any, self)
        if not me.is_connected:
            await me.connect_check_health(check_health=False)
        if check_health:
            await me.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            writer = me._writer
            if writer is None or writer.transport.is_closing():  # redis-py's errors
                await me._send_packed_command(command)
            else:
                # The socket usually takes the whole command at once: then nothing can
                # block and no timer is armed (one per command cost about 5 µs). What
                # the socket did not take waits in the transport, under the deadline.
                try:
                    writer.writelines(command)
                except (TypeError, AttributeError) as exc:  # as redis-py's (CPython #136234)
                    if writer.transport.is_closing():
                        raise RedisConnectionError("Connection closed while writing") from exc
                    raise
                if writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(me.socket_timeout or None):
                        await writer.drain()
                else:
                    await writer.drain()  # never waits; raises the reader's error, if any
        except TimeoutError as exc:  # (an OSError: first)
            await me.disconnect(nowait=True)
            if exc.errno:  # ETIMEDOUT from the OS: the connection is dead, not slow
                raise RedisConnectionError(f"Error {exc.errno} while writing to socket.") from exc
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await me.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}.") from exc
        except BaseException:  # cancelled mid-write: the connection's state is unknown
            await me.disconnect(nowait=True)
            raise

    def pack_command(self, *args: Any) -> list[bytes]:
        """Pack one command: with hiredis, straight from text, bytes and ints (what the
        library sends), without redis-py's pass that encodes each argument in Python
        first; anything else (a float, a memoryview, text hiredis refuses) the redis-py
        way, with its errors.

        Example:
            ```python
            connection.pack_command("HGET", b"key", "field")   # [b'*3\r\n$4\r\nHGET...']
            ```
        """
        name = args[0] if args else None
        if (
            _PACK is not None
            and type(name) is str
            and " " not in name  # redis-py splits "CONFIG GET" into two arguments
            and _PLAIN.issuperset(map(type, args))  # exact types, checked in C
        ):
            try:
                return [_PACK(args)]
            except (TypeError, UnicodeError):
                pass
        return super().pack_command(*args)  # type: ignore[misc, no-any-return]

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (redis-py's signature)
        **options: Any,
    ) -> Any:
        """Read one reply, within ``socket_timeout`` unless a batch's deadline covers it.

        Example:
            ```python
            reply = await connection.read_response()
            ```
        """
        if timeout is None:
            if _BATCH_DEADLINE.get():
                timeout = math.inf  # (redis-py's word for "no deadline of its own")
            elif self._watched():
                return await self._read_watched(disable_decoding, options)
        return await super().read_response(disable_decoding, timeout, **options)  # type: ignore[misc]

    # A reply is read under ``socket_timeout`` as redis-py reads it under
    # ``asyncio.timeout``, but without a timer per read (arming and cancelling one cost
    # about 9 µs on every command): each read notes when it is overdue, and one watchdog
    # per connection, armed when none is, wakes at the earliest such time. Finding the
    # read it woke for still running, it cancels its task, which then raises redis-py's
    # TimeoutError on a closed connection; finding a later deadline, it sleeps until
    # that one; finding no read, it stops.

    #: When the read in progress is overdue (event loop time), ``None`` between reads;
    #: the task reading; whether the watchdog cancelled it; the watchdog's timer.
    _flue_due: float | None = None
    _flue_reader: asyncio.Task[Any] | None = None
    _flue_overdue = False
    _flue_watchdog: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None

    def _watched(self) -> bool:
        """Whether a read without a deadline of its own is watched (see above): a
        connection with a ``socket_timeout``, without redis-py's maintenance
        notifications (which move the deadline of a read in progress)."""
        me = cast(Any, self)
        notices = getattr(me, "maint_notifications_config", None)
        return me.socket_timeout is not None and (notices is None or notices.enabled is False)

    async def _read_watched(self, disable_decoding: bool, options: dict[str, Any]) -> Any:
        me = cast(Any, self)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # (no task to cancel: redis-py's own timer)
            return await super().read_response(disable_decoding, None, **options)  # type: ignore[misc]
        cancelling = task.cancelling()
        self._flue_due = due = loop.time() + me.socket_timeout
        self._flue_reader, self._flue_overdue = task, False
        watchdog = self._flue_watchdog
        if watchdog is None or watchdog[0] is not loop:  # (none, or one of a closed loop)
            self._flue_watchdog = (loop, loop.call_at(due, self._flue_watch))
        try:
            return await super().read_response(disable_decoding, math.inf, **options)  # type: ignore[misc]
        except asyncio.CancelledError:
            if self._flue_overdue and task.uncancel() <= cancelling:  # the watchdog's doing
                raise RedisTimeoutError(f"Timeout reading from {me._host_error()}") from None
            raise
        finally:
            self._flue_due = self._flue_reader = None

    def _flue_watch(self) -> None:
        """The watchdog's turn (see above)."""
        self._flue_watchdog = None
        due, reader = self._flue_due, self._flue_reader
        if due is None or reader is None:
            return  # no read in progress: armed again by the next one
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            self._flue_watchdog = (loop, loop.call_at(due, self._flue_watch))
        elif not reader.done():
            self._flue_overdue = True
            reader.cancel()


_TIMED: dict[type, type] = {}
#: hiredis's packer, when hiredis is installed (redis-py then packs with it too), and the
#: argument types it packs exactly as redis-py's encoder would (bool is not one: int's
#: subclass, refused by both).
_PACK: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _PACK
except ImportError:  # pragma: no cover (hiredis is a dependency; redis-py packs without it)
    _PACK = None
_PLAIN = frozenset({str, bytes, int})
#: hiredis's reader class in redis-py and its "no whole reply yet" value (see
#: :func:`read_replies`); ``None`` without hiredis.
_HIREDIS: type | None
try:
    from redis._parsers import hiredis as _redis_hiredis

    _HIREDIS, _NOT_ENOUGH_DATA = _redis_hiredis._AsyncHiredisParser, _redis_hiredis.NOT_ENOUGH_DATA
except (ImportError, AttributeError):  # pragma: no cover (hiredis is a dependency)
    _HIREDIS, _NOT_ENOUGH_DATA = None, None
#: Options of a command that redis-py's ``parse_response`` takes out before its callback.
_NOT_CALLBACK_OPTIONS = frozenset({EMPTY_RESPONSE, NEVER_DECODE, "keys", RAW})


def timed_send(connection_class: type) -> type:
    """Return ``connection_class`` with :class:`TimedSend` (one subclass per class).

    Example:
        ```python
        from redis.asyncio import Connection
        timed_send(Connection).__name__   # 'TimedConnection'
        ```
    """
    found = _TIMED.get(connection_class)
    if found is None:
        name = f"Timed{connection_class.__name__}"
        found = _TIMED[connection_class] = type(name, (TimedSend, connection_class), {})
    return found


class FluePool(BlockingConnectionPool):
    """redis-py's waiting pool, with a fast path: a free connection is handed out, and
    taken back, without the condition, the lock, the timeout and the observability hooks
    around them (tens of µs per command); a caller waits the slow way only when none is
    free, and a connection is taken back the slow way when someone waits for one or it
    has something to do (a new credential to present, a reconnect to make).

    Each connection handed out is still checked as redis-py checks it (connected, no
    unread data), and a release wakes a waiting caller whenever one waits.

    Example:
        ```python
        pool = FluePool.from_url("redis://localhost:6379/0", max_connections=10, timeout=5)
        ```
    """

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        """A free connection at once, checked; else wait as redis-py's pool does.

        Example:
            ```python
            connection = await pool.get_connection()
            ```
        """
        busy = getattr(self, "_in_maintenance", False) or self._lock.locked()
        if self._available_connections and not busy:
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await self.release(connection)
                raise
            return connection
        return await super().get_connection()  # type: ignore[no-untyped-call]

    async def release(self, connection: Any) -> None:
        """Take a connection back; wake a caller waiting for one, if any.

        Example:
            ```python
            await pool.release(connection)
            ```
        """
        waiting = self._condition._waiters  # (asyncio.Condition keeps its waiters here)
        if waiting:
            await super().release(connection)
            return
        if (
            not self._lock.locked()
            and not getattr(self, "_in_maintenance", False)  # (as get_connection checks)
            and connection._re_auth_token is None  # (a streaming credential's new token)
            and not connection.should_reconnect()
        ):  # nothing to do but put it back: no await, so no waiter can come in between
            self._in_use_connections.remove(connection)
            self._available_connections.append(connection)
            return
        await ConnectionPool.release(self, connection)
        if waiting:  # one began to wait while the connection was being taken back
            async with self._condition:
                self._condition.notify()


#: Queued commands that go out at once, without waiting for the end of the loop's turn:
#: a pipeline of this many is on its way to the server while the callers after it still
#: run (they would otherwise wait for the whole turn, and the server for them).
FLUSH_AT = 32


def spawn(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` in a task kept in ``tasks`` until it ends (a pipeline sent for
    several callers: the loop holds only weak references to its tasks).

    Example:
        ```python
        spawn(coalescer.tasks, coalescer._run(groups))
        ```
    """
    task = asyncio.get_running_loop().create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def fail_waiting(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    """Give every caller still waiting on ``futures`` the failure of the pipeline their
    commands shared: the error, or a cancellation as a cancellation.

    Example:
        ```python
        fail_waiting([future], ConnectionError("lost"))   # its caller raises it
        ```
    """
    for future in futures:
        if not future.done():  # else its caller was cancelled
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                future.cancel()


class Coalescer:
    """The queue of automatic pipelining for one client (see the module's text).

    Example:
        ```python
        reply = await client.flue_coalescer.send(("HGETALL", key), {})
        replies = await client.flue_coalescer.send_many([(("GET", a), {}), (("GET", b), {})])
        ```
    """

    def __init__(self, client: FlueRedis) -> None:
        self.client = client
        self.in_flight = 0
        #: Pipelines sent for several callers, and the commands they carried.
        self.batches = 0
        self.batched = 0
        self.queued: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []
        self.waiting = 0  # the commands queued
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def alone(self) -> bool:
        """Whether nothing is in flight or queued: a caller's commands go out at once.

        Example:
            ```python
            client.flue_coalescer.alone   # True between calls
            ```
        """
        return self.in_flight == 0 and not self.queued

    async def send(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one command (queued while others are in flight); raise what redis-py
        raises for it.

        Example:
            ```python
            await coalescer.send(("GET", "k"), {})
            ```
        """
        if self.alone:  # at once, as send_many sends (without a pipeline for one command)
            self.in_flight += 1
            try:
                return await self.client.flue_one(args, options)
            finally:
                self.in_flight -= 1
        (reply,) = await self._queue([(args, options)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def send_many(self, commands: list[Command]) -> list[Any]:
        """Send commands in one pipeline, shared with other callers' while others are in
        flight; a command's error reply is returned in its place; a lost connection
        raises.

        Example:
            ```python
            await coalescer.send_many([(("HGETALL", a), {}), (("HGETALL", b), {})])
            ```
        """
        if self.alone:
            self.in_flight += 1
            try:
                return await self._pipeline(commands)
            finally:
                self.in_flight -= 1
        return await self._queue(commands)

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        if len(commands) == 1:  # a pipeline's set-up costs more than one command's
            ((args, options),) = commands
            try:
                return [await self.client.flue_one(args, options)]
            except ResponseError as exc:  # in its place, as a pipeline returns it
                return [exc]
        return await self.client.flue_many(commands)

    def _queue(self, commands: list[Command]) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self.queued:
            loop.call_soon(self._flush)
        self.queued.append((commands, future))
        self.waiting += len(commands)
        if self.waiting >= FLUSH_AT:  # the server starts on these while more are planned
            self._flush()
        return future

    def _flush(self) -> None:
        if not self.queued:  # flushed early, at FLUSH_AT
            return
        groups, self.queued, self.waiting = self.queued, [], 0
        self.batches += 1
        self.batched += sum(len(commands) for commands, _ in groups)
        spawn(self.tasks, self._run(groups))

    async def _run(self, groups: list[tuple[list[Command], asyncio.Future[list[Any]]]]) -> None:
        self.in_flight += 1
        try:
            replies = await self._pipeline([c for commands, _ in groups for c in commands])
        except BaseException as exc:  # the whole pipeline failed: every caller hears it
            fail_waiting([future for _commands, future in groups], exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self.in_flight -= 1
        start = 0
        for commands, future in groups:
            if not future.done():  # else its caller was cancelled
                future.set_result(replies[start : start + len(commands)])
            start += len(commands)


class NodeCoalescer:
    """Automatic pipelining on a cluster: while a command of the client is in flight, the
    single commands other tasks send meanwhile are queued by the primary of their slot
    and go out at the end of the loop's turn (or at :data:`FLUSH_AT`), one pipeline per
    primary. Each caller gets its own reply: a command the node redirected or refused
    for now (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``; it did not run) is sent
    again by its caller alone, which follows it as an unqueued command would. A lost
    connection is heard by the callers whose commands it carried, as on one server.

    Example:
        ```python
        reply = await client.flue_coalescer.send(("HGETALL", key), {})
        ```
    """

    def __init__(self, client: FlueRedisCluster) -> None:
        self.client = client
        self.in_flight = 0
        #: Pipelines sent for several callers, and the commands they carried.
        self.batches = 0
        self.batched = 0
        self.queued: dict[str, tuple[ClusterNode, list[tuple[Command, asyncio.Future[Any]]]]] = {}
        self.waiting = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one command (queued by its node while others are in flight); raise what
        an unqueued command raises.

        Example:
            ```python
            await coalescer.send(("GET", "k"), {})
            ```
        """
        client = self.client
        slot = None
        if (self.in_flight or self.queued) and client.flue_by_slot(args, options):
            found = {slot_of(key) for key in command_keys(args)}
            slot = found.pop() if len(found) == 1 else None
        if slot is None:  # alone, or no one slot: at once
            self.in_flight += 1
            try:
                return await client.flue_one(args, options)
            finally:
                self.in_flight -= 1
        await client.flue_ready()
        reply = await self._queue(client._flue_owner(slot), (args, options))
        if isinstance(reply, _MOVING):  # it did not run: sent again, alone, and followed
            return await client.flue_one(args, options)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _queue(self, node: ClusterNode, command: Command) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.queued:
            loop.call_soon(self._flush)
        self.queued.setdefault(node.name, (node, []))[1].append((command, future))
        self.waiting += 1
        if self.waiting >= FLUSH_AT:
            self._flush()
        return future

    def _flush(self) -> None:
        groups, self.queued, self.waiting = self.queued, {}, 0
        for node, group in groups.values():
            self.batches += 1
            self.batched += len(group)
            spawn(self.tasks, self._run(node, group))

    async def _run(
        self, node: ClusterNode, group: list[tuple[Command, asyncio.Future[Any]]]
    ) -> None:
        self.in_flight += 1
        try:
            replies = await self.client._flue_send(node, [c for c, _ in group], False, None, None)
        except BaseException as exc:  # the node's pipeline failed: its callers hear it
            fail_waiting([future for _command, future in group], exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self.in_flight -= 1
        for (_command, future), reply in zip(group, replies, strict=True):
            if not future.done():  # else its caller was cancelled
                future.set_result(reply)


#: ``WAIT``'s arguments: the replicas to wait for and the timeout in milliseconds.
Wait = tuple[int, int]

#: Commands that never write: no ``WAIT`` follows them (``connect(wait_replicas=...)``).
#: Anything else (a script included) is taken for a write.
READ_ONLY = frozenset(
    {
        "GET", "MGET", "STRLEN", "HGET", "HGETALL", "HMGET", "HLEN", "HEXISTS", "HKEYS",
        "HVALS", "HSCAN", "LRANGE", "LLEN", "LINDEX", "XRANGE", "XREVRANGE", "XLEN", "XINFO",
        "XREAD", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX",
        "ZREVRANGEBYLEX", "ZSCORE", "ZMSCORE", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZRANK",
        "ZREVRANK", "ZSCAN", "SMEMBERS", "SISMEMBER", "SCARD", "SSCAN", "EXISTS", "TYPE",
        "TTL", "PTTL", "SCAN", "DBSIZE", "MEMORY", "OBJECT", "TIME", "PING", "ECHO", "INFO",
        "CONFIG", "CLIENT", "CLUSTER", "COMMAND", "SCRIPT", "HELLO", "WAIT", "WAITAOF",
        "EVAL_RO", "EVALSHA_RO", "FCALL_RO", "READONLY", "READWRITE", "ASKING", "MULTI", "EXEC",
    }
)  # fmt: skip


def writes(args: Sequence[Any]) -> bool:
    """Whether a command may write (a ``WAIT`` follows it when replicas are asked for).

    Example:
        >>> writes(("HGETALL", "k")), writes(("EVALSHA", "0" * 40, 1, "k"))
        (False, True)
    """
    return bool(args) and str(args[0]).upper() not in READ_ONLY


async def wait_reply(connection: Any, wait: Wait) -> Any:
    """Read ``WAIT``'s reply on ``connection``: within the connection's own timeout plus
    the time ``WAIT`` itself may take (a reply that takes longer is a lost connection).

    Example:
        ```python
        acknowledged = await wait_reply(connection, (1, 1000))
        ```
    """
    limit = connection.socket_timeout
    return await connection.read_response(timeout=None if limit is None else limit + wait[1] / 1000)


def check_wait(
    wait: Wait,
    acknowledged: Any,
    where: str,
    commands: Sequence[Sequence[Any]],
    replies: Sequence[Any],
) -> None:
    """Raise :class:`~flue_models.errors.NotReplicatedError` when ``WAIT``'s reply counts
    fewer replicas than ``wait`` asked for, and something ran: when every reply is an
    error (refused, redirected, ``NOSCRIPT``), nothing was written and the caller hears
    that error instead.

    Example:
        >>> check_wait((1, 100), 1, "127.0.0.1:7000", [("HSET", "k", "f", "v")], [1])
        >>> check_wait((1, 100), 0, "127.0.0.1:7000", [("EVALSHA",)], [ResponseError("x")])
    """
    wanted, timeout = wait
    if int(acknowledged) < wanted and not all(isinstance(r, Exception) for r in replies):
        names = sorted({str(c[0]).upper() for c in commands if writes(c)})
        raise NotReplicatedError(
            where, " + ".join(names) or "the write", wanted, int(acknowledged), timeout / 1000
        )


async def read_replies(connection: Any, count: int) -> list[Any]:
    """Read ``count`` replies from ``connection``, each as the server sent it (an error
    reply as redis-py's exception for it, in its place), within the caller's deadline.

    With hiredis (a dependency), the replies already received are taken from its reader
    in one loop and the socket is read only when it runs dry: redis-py reads each reply
    through its connection's reader, under a timer of its own, several µs per reply,
    which is most of the client's cost of a batch of small replies. Without it, one by
    one as redis-py reads them.

    Raises:
        redis.exceptions.ConnectionError: the connection was closed or failed.

    Example:
        ```python
        await connection.send_packed_command(connection.pack_commands(commands))
        replies = await read_replies(connection, len(commands))
        ```
    """
    parser: Any = connection._parser
    reader: Any = getattr(parser, "_reader", None)
    ours = reader is not None and parser.__class__ is _HIREDIS
    if not ours:  # redis-py's own reader
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    if not parser._connected:
        raise RedisConnectionError("the connection was closed")
    push = parser._hiredis_PushNotificationType
    gets = reader.gets
    replies = []
    try:
        while len(replies) < count:
            reply = gets()
            if reply is _NOT_ENOUGH_DATA:
                await parser.read_from_socket()
            elif push is not None and isinstance(reply, push):
                await parser.handle_push_response(reply)  # (RESP3 pushes: not a reply)
            elif isinstance(reply, RedisConnectionError):
                raise reply
            else:
                replies.append(reply)
    except OSError as exc:  # (as redis-py's reader turns it)
        raise RedisConnectionError(f"Error while reading from the socket: {exc}") from exc
    if connection.health_check_interval:
        loop = asyncio.get_running_loop()
        connection.next_health_check = loop.time() + connection.health_check_interval
    return replies


def shaped(reply: Any, args: Sequence[Any], options: Mapping[str, Any], callbacks: Any) -> Any:
    """A reply as redis-py's ``parse_response`` returns it: through its command's
    callback; an error reply stays the exception (``EMPTY_RESPONSE``'s value instead,
    when the command gave one).

    Example:
        ```python
        shaped([b"f", b"v"], ("HGETALL", key), {}, client.response_callbacks)   # {b"f": b"v"}
        ```
    """
    if isinstance(reply, ResponseError):
        return options.get(EMPTY_RESPONSE, reply)
    back = callbacks.get(args[0])
    if back is None or (options and options.get(RAW)):
        return reply
    if options:
        options = {k: v for k, v in options.items() if k not in _NOT_CALLBACK_OPTIONS}
    return back(reply, **options)


async def read_shaped(
    connection: Any, commands: Sequence[Command], callbacks: Mapping[Any, Any]
) -> list[Any]:
    """The replies of ``commands``, sent on ``connection``: each shaped by its command's
    callback, an error reply in its place (see :func:`read_replies`, :func:`shaped`).

    Example:
        ```python
        replies = await read_shaped(connection, [(("HGETALL", k), {})], client.response_callbacks)
        ```
    """
    replies = await read_replies(connection, len(commands))
    callbacks = _callbacks_of(connection, commands, callbacks)
    return [
        shaped(reply, args, options, callbacks)
        for (args, options), reply in zip(commands, replies, strict=True)
    ]


def _callbacks_of(
    connection: Any, commands: Sequence[Command], callbacks: Mapping[Any, Any]
) -> Mapping[Any, Any]:
    """The callbacks for ``commands`` on ``connection``: the client's, or on a connection
    that fell back to RESP2 (a server without ``HELLO 3``), those redis-py picks for it."""
    if not getattr(connection, "_resp2_fallback", False):
        return callbacks
    pick = response_callbacks._get_response_callback
    return {args[0]: pick(callbacks, args[0], connection) for args, _ in commands}


async def read_within(
    connection: Any, commands: Sequence[Command], callbacks: Mapping[Any, Any], atomic: bool
) -> list[Any]:
    """The replies of ``commands`` sent on ``connection`` (:func:`read_exec`'s when
    ``atomic``, else :func:`read_shaped`'s), read under the connection's timeout: one
    deadline for a ``MULTI``, and one per stretch of :data:`DEADLINE_STRETCH` replies
    otherwise (each renewal gives a slow server the timeout again for the next stretch).

    Raises:
        redis.exceptions.TimeoutError: a deadline passed (replies are left unread: the
            caller closes the connection).

    Example:
        ```python
        replies = await read_within(connection, [(("GET", k), {})], callbacks, False)
        ```
    """
    limit = connection.socket_timeout or None
    token = _BATCH_DEADLINE.set(True)
    try:
        if atomic:
            async with asyncio.timeout(limit) as deadline:
                return await read_exec(connection, commands, callbacks)
        replies: list[Any] = []
        for start in range(0, len(commands), DEADLINE_STRETCH):
            stretch = commands[start : start + DEADLINE_STRETCH]
            async with asyncio.timeout(limit) as deadline:
                replies += await read_shaped(connection, stretch, callbacks)
        return replies
    except TimeoutError:
        if deadline.expired():
            raise RedisTimeoutError("Timeout reading from socket") from None
        raise
    finally:
        _BATCH_DEADLINE.reset(token)


async def read_exec(
    connection: Any, commands: Sequence[Command], callbacks: Mapping[Any, Any]
) -> list[Any]:
    """Read the replies of ``MULTI``, ``commands`` and ``EXEC``, sent on ``connection``:
    EXEC's, each through its command's callback (as redis-py's pipeline applies it), an
    error inside EXEC in its place.

    Raises:
        ResponseError: EXEC aborted: a command was refused while queued (nothing ran);
            a cluster's redirect or ``TRYAGAIN`` among the refusals first.

    Example:
        ```python
        replies = await read_exec(connection, [(("HGETALL", k), {})], client.response_callbacks)
        ```
    """
    started, *queued, done = await read_replies(connection, len(commands) + 2)
    if isinstance(started, ResponseError):
        raise started
    if isinstance(done, ExecAbortError):
        refused = [e for e in queued if isinstance(e, ResponseError)]
        moving = next((e for e in refused if isinstance(e, _MOVING)), None)
        raise (moving or (refused[0] if refused else done)) from None
    if isinstance(done, ResponseError):
        raise done
    callbacks = _callbacks_of(connection, commands, callbacks)
    return [
        reply if isinstance(reply, Exception) else shaped(reply, args, options, callbacks)
        for (args, options), reply in zip(commands, done, strict=True)
    ]


def script_error(name: str, exc: ResponseError | CommandError) -> FlueModelsError:
    """Turn a script's error reply into the library's error for it.

    Example:
        >>> script_error("save", ResponseError("FLUE_WRONGTYPE p:t:all string zset")).key
        'p:t:all'
    """
    message = str(exc)
    words = message.split(" ", 4)
    if words[0] == "FLUE_WRONGTYPE" and len(words) >= 4:
        return CorruptDataError.wrong_type(name, words[1], words[2], words[3])
    if words[0] == "FLUE_CORRUPT" and len(words) >= 4:
        return CorruptDataError.not_a_number(name, words[1], words[2], " ".join(words[3:]))
    if isinstance(exc, RedisOutOfMemoryError) or message.startswith("OOM"):
        return OutOfMemoryError(name)
    if isinstance(exc, NoPermissionError) or message.startswith("NOPERM"):
        return CommandError.no_permission(f"the {name!r} script", message)
    return ScriptError(name, message)


@dataclass(frozen=True)
class Script:
    """A loaded Lua script: its name, its text and the SHA1 EVALSHA names it by (made by
    :class:`flue_models.scripts.Scripts`, run by :meth:`FlueCommands.run_script`).

    Example:
        ```python
        db.scripts.get("save").sha   # '3f7a...'
        ```
    """

    name: str
    text: str
    sha: str


#: What :meth:`FlueCommands.span` returns when telemetry is off: nothing to do.
NO_SPAN: AbstractContextManager[None] = nullcontext()


class FlueCommands:
    """What both clients add to redis-py's: retries and the library's errors on every
    command, and automatic pipelining.

    Example:
        ```python
        await db.client.execute_command("GET", key)       # retried if the connection drops
        ```
    """

    flue_policy: RetryPolicy = RetryPolicy()
    flue_display: str = ""
    flue_coalescer: Coalescer | NodeCoalescer | None = None
    #: Seconds a reply may take (``ClientSettings.timeout``); blocking reads stay below it.
    flue_timeout: float | None = None
    #: What each write waits for (``connect(wait_replicas=...)``): ``WAIT``'s replicas
    #: and timeout (ms), sent behind it on its connection; ``None``: no ``WAIT``.
    flue_wait: Wait | None = None
    #: What every span of this client says of its server: ``db.system.name`` (set from
    #: the start-up inspection) and the address attributes (set by the ``Database``).
    flue_span_system: str = "redis"
    flue_span_server: Mapping[str, Any] = {}

    def span(
        self, operation: str, collection: str | None = None, **extra: Any
    ) -> AbstractContextManager[None]:
        """Return an OpenTelemetry span for one library operation (a no-op unless the
        ``otel`` extra is installed and a tracer provider is configured).

        It lives on the client, which every operation reaches anyway, so that with spans
        off an operation pays one check and no call into another module.

        Example:
            ```python
            with db.client.span("save", "ticket"):
                ...
            ```
        """
        # telemetry.enabled(), inlined: the common case costs one test and no call.
        if (
            trace is None
            or (UNSET_READABLE and trace._TRACER_PROVIDER is None)
            or isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
        ):
            return NO_SPAN
        return operation_span(
            operation, collection, self.flue_span_system, self.flue_span_server, **extra
        )

    async def run_script(
        self, script: Script, keys: Sequence[Any], args: Sequence[Any], *, unsafe: bool = False
    ) -> Any:
        """Run ``script`` by EVALSHA and return its reply; on NOSCRIPT (a flush or a
        restart: it did not run) send it again as EVAL with its text, which caches it
        again and cannot meet NOSCRIPT itself, so a client flushing the cache in a loop
        cannot make the call fail.

        ``unsafe``: the script is not safe to repeat after a lost reply (see
        :meth:`execute_command`).

        Raises:
            ScriptError: the script answered with an error (``CorruptDataError`` for a
                refusal of its check phase, ``OutOfMemoryError`` under ``maxmemory``).

        Example:
            ```python
            reply = await db.client.run_script(db.scripts.get("save"), keys, args)
            ```
        """
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                return await self.execute_command(*command, **{UNSAFE: unsafe})
            except NoScriptError:
                text = ("EVAL", script.text, *command[2:])
                return await self.execute_command(*text, **{UNSAFE: unsafe})
        except CommandError as exc:
            cause = exc.__cause__
            error = script_error(script.name, cause if isinstance(cause, ResponseError) else exc)
            raise error from exc

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command with retries; raise the library's errors.

        ``flue_unsafe=True`` marks a command that is not safe to repeat after a lost
        reply: it is retried only when it never reached the server. ``flue_policy``
        gives this command another :class:`RetryPolicy`.

        Example:
            ```python
            await db.client.execute_command("EVALSHA", sha, 1, key, flue_unsafe=True)
            ```
        """
        unsafe = bool(options.pop(UNSAFE, False))
        policy = options.pop(POLICY, None) or self.flue_policy

        coalescer = self.flue_coalescer
        if self.flue_wait is not None and writes(args) and isinstance(self, FlueRedis):
            wait = self.flue_wait

            async def once() -> Any:
                (reply,) = await self.flue_many([(args, options)], wait=wait)
                if isinstance(reply, Exception):
                    raise reply
                return reply
        elif coalescer is not None and queueable(args) and (not self.flue_wait or not writes(args)):
            once = functools.partial(coalescer.send, args, options)  # (no coroutine of ours)
        else:
            once = functools.partial(self.flue_one, args, options)

        command = str(args[0]) if args else "?"
        return await with_retries(once, policy, self.flue_display, command, unsafe=unsafe)

    async def flue_one(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one command through redis-py's client and return its reply (once: the
        retries are :meth:`execute_command`'s). :class:`FlueRedis` sends it straight on a
        pooled connection instead.

        Example:
            ```python
            await client.flue_one(("GET", key), {})
            ```
        """
        parent: Any = super()
        return await parent.execute_command(*args, **options)


class FlueRedis(FlueCommands, Redis):  # type: ignore[misc]  # redis-py's own bases disagree
    """``redis.asyncio.Redis`` with the library's retries and errors on every command.

    Example:
        ```python
        await db.client.execute_command("GET", key)       # retried if the connection drops
        ```
    """

    async def flue_one(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one command on a pooled connection and read its reply: what redis-py's
        ``execute_command`` does for this client, without the layers it does not use
        (redis-py's retry, which is off, its metrics hooks, the single-connection lock):
        the same connection checks, the same reply callbacks, a connection that failed
        is closed.

        Example:
            ```python
            await client.flue_one(("GET", key), {})
            ```
        """
        pool = self.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_command(*args)
            return await self.parse_response(connection, args[0], **options)
        except (RedisConnectionError, RedisTimeoutError):
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def flue_many(
        self, commands: Sequence[Command], *, atomic: bool = False, wait: Wait | None = None
    ) -> list[Any]:
        """Send ``commands`` in one write on one pooled connection and read their replies,
        a command's error reply in its place (as redis-py's pipeline with
        ``raise_on_error=False``); a lost connection or a timeout raises, and the
        connection is closed. ``atomic`` wraps them in ``MULTI``/``EXEC`` (a command
        refused while queued aborts the whole: its error is raised); ``wait`` sends
        ``WAIT`` behind them, on the same connection (see :func:`check_wait`).

        The replies are read under one deadline per stretch of :data:`DEADLINE_STRETCH`
        replies, each of ``socket_timeout`` (redis-py's pipeline arms a timer per reply,
        which costs more than reading a small one).

        Raises:
            NotReplicatedError: ``wait`` was not met: the commands ran.

        Example:
            ```python
            replies = await client.flue_many([(("HGETALL", a), {}), (("HGETALL", b), {})])
            ```
        """
        pool = self.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        wire: list[tuple[Any, ...]] = [args for args, _options in commands]
        if atomic:
            wire = [("MULTI",), *wire, ("EXEC",)]
        if wait is not None:
            wire.append(("WAIT", *wait))
        try:
            await connection.send_packed_command(connection.pack_commands(wire))
            replies = await read_within(connection, commands, self.response_callbacks, atomic)
            if wait is not None:
                acknowledged = await wait_reply(connection, wait)
                check_wait(wait, acknowledged, self.flue_display, wire, replies)
        except BaseException as exc:  # replies may be left unread: not reused
            if not isinstance(exc, NotReplicatedError):  # (every reply was read)
                await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        return replies


class FlueRedisCluster(FlueCommands, RedisCluster):  # type: ignore[misc]  # as above
    """``redis.asyncio.RedisCluster`` with the library's retries and errors, and its own
    routing: every command, batch and ``MULTI`` whose keys are in one slot goes to that
    slot's primary in one write (:meth:`flue_in_slot`), and follows the cluster there.

    * ``MOVED`` (the slot has a new owner): the slot map is patched and the command sent
      to the owner; a ``MULTI`` refused so did not run, so it is sent again whole.
    * ``ASK`` (the slot is half-moved and the key already left): sent to the importing
      node behind ``ASKING``, in the same write on the same connection, so the allowance
      serves this command and never another task's.
    * ``TRYAGAIN`` (keys of one call split by the move) and ``CLUSTERDOWN`` (a failover
      under way): nothing ran; retried with the client's :class:`RetryPolicy`.
    * A lost node: the slot map is refreshed before the next try (a failover promotes a
      replica), within the same policy.

    Commands without a slot (``INFO``, ``TIME``, ``SCRIPT LOAD``) go through redis-py.

    Example:
        ```python
        await db.client.execute_command("EVALSHA", sha, 1, key)   # to the key's primary
        ```
    """

    async def flue_one(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Send one command to the primary of its keys' slot (see the class); a command
        without one through redis-py.

        Example:
            ```python
            await client.flue_one(("HGETALL", key), {})
            ```
        """
        if not self.flue_by_slot(args, options):
            return await super().flue_one(args, options)
        await self.flue_ready()
        slot = await self._determine_slot(*args)
        wait = self.flue_wait if self.flue_wait is not None and writes(args) else None
        (reply,) = await self.flue_in_slot(slot, [args], options, wait=wait)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def flue_by_slot(self, args: tuple[Any, ...], options: dict[str, Any]) -> bool:
        """Whether the library routes a command by the slot of its keys (else redis-py
        does: a command without keys, or one redis-py sends to nodes of its choosing).

        Example:
            ```python
            client.flue_by_slot(("HGETALL", key), {})   # True
            ```
        """
        name = str(args[0]).upper() if args else ""
        return not ("target_nodes" in options or name in self.command_flags or name in _KEYLESS)

    async def flue_ready(self) -> None:
        """Run the slot-map refresh an earlier error asked for, once it is due (redis-py's
        own commands do the same before each attempt).

        Example:
            ```python
            await client.flue_ready()
            ```
        """
        if self._initialize_due():
            await self.initialize()

    async def flue_in_slot(
        self,
        slot: int,
        commands: Sequence[Sequence[Any]],
        options: dict[str, Any] | None = None,
        *,
        atomic: bool = False,
        wait: Wait | None = None,
    ) -> list[Any]:
        """Send ``commands`` (every key in ``slot``) to the slot's primary in one write and
        return their replies in order, a command's error reply in its place; ``atomic``
        wraps them in ``MULTI``/``EXEC``; ``wait`` sends ``WAIT`` behind them on the same
        connection. Redirects are followed as the class says: only the commands
        redirected are sent again (they did not run), a ``MULTI`` whole.

        Raises:
            TryAgainError, ClusterDownError: the slot stayed unavailable (nothing of what
                is still pending ran); ``with_retries`` retries them.
            NotReplicatedError: ``wait`` was not met (the commands ran).
            ClusterError: more than :data:`MAX_REDIRECTS` redirects (the slot keeps moving).
            redis-py's connection errors: the node was lost (its slot map is refreshed
                before the next try).

        Example:
            ```python
            replies = await client.flue_in_slot(slot, [("HGETALL", k1), ("HGETALL", k2)])
            ```
        """
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        asking: ClusterNode | None = None
        waits = 0
        for _redirect in range(MAX_REDIRECTS):
            node = asking or self._flue_owner(slot)
            sent = [(tuple(commands[i]), options or {}) for i in pending]
            found = await self._flue_send(node, sent, atomic, asking, wait)
            pending, asking, unstable = await self._flue_sort(node, pending, found, replies)
            if not pending:
                return replies
            if unstable is not None:  # nothing of what is pending ran
                if atomic or waits >= self.flue_policy.retries:
                    raise unstable  # a MULTI is sent again whole by with_retries
                await asyncio.sleep(self.flue_policy.delay(waits))
                waits += 1
        raise ClusterError(
            f"slot {slot} was redirected {MAX_REDIRECTS} times in one call: it keeps moving"
        )

    def _flue_owner(self, slot: int) -> ClusterNode:
        """The primary of ``slot`` in the client's slot map."""
        try:
            return self.nodes_manager.get_node_from_slot(slot)
        except SlotNotCoveredError as exc:  # a failover under way: refreshed, retried
            self._request_refresh()
            raise ClusterDownError(f"no node serves slot {slot} now ({exc})") from exc

    async def _flue_sort(
        self, node: ClusterNode, pending: list[int], found: list[Any], replies: list[Any]
    ) -> tuple[list[int], ClusterNode | None, ResponseError | None]:
        """Put the replies of ``pending`` (read from ``node``) in their places; return the
        positions to send again, the node to ask for them (``ASK``), and the refusal that
        holds them back (``TRYAGAIN``, ``CLUSTERDOWN``). A ``MOVED`` patches the slot map."""
        again: list[int] = []
        redirect: AskError | None = None
        unstable: ResponseError | None = None
        for position, reply in zip(pending, found, strict=True):
            if isinstance(reply, AskError):  # MOVED included
                redirect = reply
                again.append(position)
            elif isinstance(reply, TryAgainError | ClusterDownError):
                unstable = reply
                again.append(position)
            else:
                replies[position] = reply
        if unstable is not None:
            if isinstance(unstable, ClusterDownError):
                self._request_refresh()
            _note_node(unstable, node)
            return again, None, unstable
        if redirect is None:
            return again, None, None
        if redirect.host in ("", "?"):  # a node may leave its own host out
            redirect.host = node.host
        if isinstance(redirect, MovedError):
            await self.nodes_manager.move_slot(redirect)
            return again, None, None
        host, port = self.nodes_manager.remap_host_port(redirect.host, redirect.port)
        asking = self.get_node(host, port)
        if asking is None:
            asking = ClusterNode(host, port, PRIMARY, **self.nodes_manager.connection_kwargs)
            self.nodes_manager.set_nodes(self.nodes_manager.nodes_cache, {asking.name: asking})
        return again, asking, None

    async def _flue_send(
        self,
        node: ClusterNode,
        sent: Sequence[Command],
        atomic: bool,
        asking: ClusterNode | None,
        wait: Wait | None,
    ) -> list[Any]:
        """One write of ``sent`` (commands and their options) to ``node`` (behind
        ``ASKING`` when ``asking``), its replies read; errors in place, and for an aborted
        ``MULTI`` its redirect (or ``TRYAGAIN``) in the place of every command; then
        ``WAIT``'s, when asked and something ran."""
        commands = [args for args, _options in sent]
        connection = node.acquire_connection()
        try:
            await node.disconnect_if_needed(connection)
            wire: list[Sequence[Any]] = [("ASKING",)] if asking else []
            wire += [("MULTI",), *commands, ("EXEC",)] if atomic else commands
            if wait is not None:
                wire.append(("WAIT", *wait))
            await connection.send_packed_command(connection.pack_commands(wire))
            if asking:
                await connection.read_response()
            try:
                replies = await read_within(connection, sent, node.response_callbacks, atomic)
            except _MOVING as exc:  # a redirect while queued, or EXEC's own check of the slot
                replies = [exc] * len(sent)
            if wait is not None:
                acknowledged = await wait_reply(connection, wait)
                check_wait(wait, acknowledged, node.name, commands, replies)
            return replies
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await connection.disconnect()
            node._mark_free_connections_for_reconnect_on_error(exc)
            self.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
            self._request_refresh(last_failed_node_name=node.name)
            _note_node(exc, node)
            raise
        except BaseException:  # replies may be left unread: the connection is not reused
            await connection.disconnect()
            raise
        finally:
            await node.disconnect_if_needed(connection)
            node.release(connection)

    async def flue_per_node(
        self, commands: Sequence[Sequence[Any]], *, wait: Wait | None = None
    ) -> list[Any] | None:
        """Send ``commands`` as one pipeline per primary, all at once, grouped here by
        their keys' slots; return the replies in order (a command's error in its place).
        A command redirected on the way follows its slot (:meth:`flue_in_slot`); ``wait``
        sends ``WAIT`` behind each primary's part.

        ``None`` when a command cannot be routed so (no key, keys of several slots): the
        caller then sends the batch through redis-py's pipeline.

        Example:
            ```python
            replies = await client.flue_per_node([("HGETALL", k) for k in keys])
            ```
        """
        slots: list[int] = []
        for command in commands:
            found = {slot_of(key) for key in command_keys(command)}
            if len(found) != 1:
                return None
            slots.append(found.pop())
        await self.flue_ready()
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for position, slot in enumerate(slots):
            node = self._flue_owner(slot)
            groups.setdefault(node.name, (node, []))[1].append(position)
        replies: list[Any] = [None] * len(commands)
        await asyncio.gather(
            *(
                self._flue_node_batch(node, p, commands, slots, replies, wait)
                for node, p in groups.values()
            )
        )
        return replies

    async def _flue_node_batch(
        self,
        node: ClusterNode,
        positions: list[int],
        commands: Sequence[Sequence[Any]],
        slots: list[int],
        replies: list[Any],
        wait: Wait | None,
    ) -> None:
        """One node's part of :meth:`flue_per_node`: its commands in one write; those
        redirected (they did not run) sent again, slot by slot, where the slot is now."""
        sent: list[Command] = [(tuple(commands[i]), {}) for i in positions]
        found = await self._flue_send(node, sent, False, None, wait)
        again, _asking, _unstable = await self._flue_sort(node, positions, found, replies)
        by_slot: dict[int, list[int]] = {}
        for position in again:
            by_slot.setdefault(slots[position], []).append(position)
        for slot, moved in by_slot.items():
            sent = await self.flue_in_slot(slot, [commands[i] for i in moved], wait=wait)
            for position, reply in zip(moved, sent, strict=True):
                replies[position] = reply


#: Commands with no key that redis-py routes by its own rules (to a node it picks).
_KEYLESS = frozenset({"TIME", "PING", "INFO", "SCRIPT", "CLIENT", "CONFIG", "CLUSTER"})
#: A slot's answers that a call did not run there: redirected, or refused for now.
_MOVING = (AskError, TryAgainError, ClusterDownError)
#: Redirects one call follows before it gives up (redis-py's TTL is 16 too).
MAX_REDIRECTS = 16


def _note_node(exc: BaseException, node: ClusterNode) -> None:
    """Name the node an error came from, for its message (see :func:`translate`)."""
    exc.flue_node = node.name  # type: ignore[attr-defined]


#: The client of a :class:`~flue_models.Database`: one server, or a cluster.
FlueClient = FlueRedis | FlueRedisCluster


def _check_settings(settings: ClientSettings, options: dict[str, Any]) -> None:
    size, wait, timeout = settings.pool_size, settings.pool_timeout, settings.timeout
    if type(size) is not int or size <= 0:
        raise ConfigurationError(f"pool_size must be a positive int, not {size!r}.")
    if not isinstance(wait, int | float) or wait <= 0:
        raise ConfigurationError(f"pool_timeout must be positive seconds, not {wait!r}.")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigurationError(f"timeout must be positive seconds or None, not {timeout!r}.")
    replicas, wait_for = settings.wait_replicas, settings.wait_timeout
    if type(replicas) is not int or replicas < 0:
        raise ConfigurationError(f"wait_replicas must be 0 or more, not {replicas!r}.")
    if not isinstance(wait_for, int | float) or not 0 < wait_for < 3600:
        raise ConfigurationError(f"wait_timeout must be seconds in (0, 3600), not {wait_for!r}.")
    if settings.protocol is not None:
        options["protocol"] = settings.protocol


def _wait_of(settings: ClientSettings) -> Wait | None:
    if not settings.wait_replicas:
        return None
    return (settings.wait_replicas, max(1, round(settings.wait_timeout * 1000)))


def make_cluster_client(
    url: str, *, display: str, settings: ClientSettings, **options: Any
) -> FlueRedisCluster:
    """Build the client of a database on a Redis Cluster (``url`` names any of its nodes).

    ``pool_size`` is the most connections per node; a command finding them all busy
    fails with :class:`~flue_models.errors.PoolExhaustedError` (redis-py's cluster pool
    does not wait). Single commands are pipelined per primary (:class:`NodeCoalescer`)
    unless ``auto_pipeline`` is off. Call ``await client.initialize()`` next.

    Raises:
        ConfigurationError: a setting is out of range.

    Example:
        ```python
        client = make_cluster_client(url, display=redact_url(url), settings=ClientSettings())
        await client.initialize()
        ```
    """
    _check_settings(settings, options)
    with _url_options(display):
        client = cast(
            FlueRedisCluster,
            FlueRedisCluster.from_url(
                url,
                max_connections=settings.pool_size,
                socket_timeout=settings.timeout,
                socket_connect_timeout=settings.timeout,
                health_check_interval=HEALTH_CHECK_SECONDS,
                retry=Retry(NoBackoff(), 0),
                **options,
            ),
        )
    # Every node's connections send as a standalone client's do (hiredis packs the
    # arguments as they are, and a deadline without a task per write): redis-py's cluster
    # takes no connection class, so the one its nodes are made with is set here, before
    # any node has a connection.
    manager = client.nodes_manager
    timed = timed_send(manager.connection_kwargs["connection_class"])
    for kwargs in (client.connection_kwargs, manager.connection_kwargs):
        kwargs["connection_class"] = timed
    for node in manager.startup_nodes.values():
        node.connection_class = timed
    client.flue_policy = settings.retry or RetryPolicy.for_cluster()
    client.flue_wait = _wait_of(settings)
    client.flue_display = display
    client.flue_timeout = settings.timeout
    if settings.auto_pipeline:
        client.flue_coalescer = NodeCoalescer(client)
    return client


@contextmanager
def _url_options(display: str) -> Iterator[None]:
    """redis-py reads a URL's query options (``?socket_timeout=...``) itself and raises
    ``ValueError`` for a bad one: an :class:`InvalidURLError` naming the URL."""
    try:
        yield
    except ValueError as exc:
        raise InvalidURLError(f"Invalid Redis URL {display!r}: {exc}") from exc


def make_client(url: str, *, display: str, settings: ClientSettings, **options: Any) -> FlueRedis:
    """Build the client of one database: a waiting pool, no redis-py retries, ours instead.

    Idle connections are pinged before use after ``HEALTH_CHECK_SECONDS``, so a dead one
    (a server restart) is replaced before a command is sent on it.

    Args:
        url: the server's URL (with its password).
        display: the URL as shown in messages (password masked).
        settings: retries, pool and timeouts.
        options: more ``redis.asyncio.Redis`` options (``client_name``...).

    Raises:
        ConfigurationError: a setting is out of range.

    Example:
        ```python
        client = make_client(url, display=redact_url(url), settings=ClientSettings())
        ```
    """
    _check_settings(settings, options)
    size, wait, timeout = settings.pool_size, settings.pool_timeout, settings.timeout
    with _url_options(display):
        pool = FluePool.from_url(
            url,
            max_connections=size,
            timeout=wait,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=HEALTH_CHECK_SECONDS,
            retry=Retry(NoBackoff(), 0),
            # Off: with redis-py's "auto" the pool skips its check of a connection it
            # hands out, so after a server restart a write went out on a closed one.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
            **options,
        )
    pool.connection_class = timed_send(pool.connection_class)
    client = FlueRedis(connection_pool=pool)
    client.auto_close_connection_pool = True  # the client owns its pool (as from_pool)
    client.flue_policy = settings.retry or RetryPolicy()
    client.flue_wait = _wait_of(settings)
    client.flue_display = display
    client.flue_timeout = settings.timeout
    if settings.auto_pipeline:
        client.flue_coalescer = Coalescer(client)
    return client


def adopt_client(client: Any, *, settings: ClientSettings) -> tuple[FlueClient, str]:
    """Wrap a redis-py client the application made (``connect(client=...)``): the
    library's retries, errors and routing on the client's own connections (a standalone
    client's pool, a cluster client's nodes and slot map, shared, not copied). Its
    connection settings (address, credentials, TLS, timeouts, pool size, protocol) stay
    its own; ``settings``' retry policy, ``wait_replicas`` and automatic pipelining apply.
    Return the wrapper and the address to show (no password).

    Raises:
        ConfigurationError: not a ``redis.asyncio`` client, or one made with
            ``decode_responses=True`` (the library reads bytes).

    Example:
        ```python
        wrapped, shown = adopt_client(redis.asyncio.Redis(), settings=ClientSettings())
        ```
    """
    _check_settings(settings, {})
    if isinstance(client, RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
        _refuse_decoding(kwargs)
        cluster = FlueRedisCluster.__new__(FlueRedisCluster)
        _share_state(client, cluster)  # the same nodes, pools and slot map
        seed = next(iter(client.nodes_manager.startup_nodes.values()), None)
        shown = f"redis://{seed.name}" if seed is not None else "redis://(cluster)"
        cluster.flue_policy = settings.retry or RetryPolicy.for_cluster()
        if settings.auto_pipeline:
            cluster.flue_coalescer = NodeCoalescer(cluster)
        wrapped: FlueClient = cluster
    elif isinstance(client, Redis):
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        _refuse_decoding(kwargs)
        standalone = FlueRedis(connection_pool=pool)  # a pool given: never closed by us
        if "path" in kwargs:
            shown = f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
        else:
            host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
            shown = f"redis://{host}:{port}/{kwargs.get('db', 0)}"
        standalone.flue_policy = settings.retry or RetryPolicy()
        if settings.auto_pipeline:
            standalone.flue_coalescer = Coalescer(standalone)
        wrapped = standalone
    else:
        raise ConfigurationError(
            f"client= takes a redis.asyncio.Redis or RedisCluster, not {type(client).__name__}."
        )
    wrapped.flue_display = shown
    wrapped.flue_timeout = kwargs.get("socket_timeout")
    wrapped.flue_wait = _wait_of(settings)
    return wrapped, shown


def _share_state(source: Any, target: Any) -> None:
    """Point ``target``'s attributes at ``source``'s (slots and ``__dict__``): a second
    face of the same client, not a copy of its nodes or connections."""
    for klass in type(source).__mro__:
        for name in getattr(klass, "__slots__", ()):
            if name not in ("__weakref__", "__dict__") and hasattr(source, name):
                setattr(target, name, getattr(source, name))
    target.__dict__.update(getattr(source, "__dict__", {}))


def _refuse_decoding(kwargs: dict[str, Any]) -> None:
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "client= was made with decode_responses=True; flue-models reads replies as "
            "bytes. Pass a client made with decode_responses=False (redis-py's default); "
            "your own code can keep its decoding client."
        )


__all__ = [
    "CLUSTER_REFUSED",
    "FAILOVER_BUDGET",
    "HEALTH_CHECK_SECONDS",
    "MAX_REDIRECTS",
    "POLICY",
    "READ_ONLY",
    "RETRIED",
    "UNQUEUED",
    "UNSAFE",
    "ClientSettings",
    "ClosedUnderUsError",
    "Coalescer",
    "Command",
    "FlueClient",
    "FlueCommands",
    "FlueRedis",
    "FlueRedisCluster",
    "RetryPolicy",
    "TimedSend",
    "Wait",
    "adopt_client",
    "check_wait",
    "closed_under_us",
    "make_client",
    "make_cluster_client",
    "never_sent",
    "not_a_reply",
    "queueable",
    "read_exec",
    "timed_send",
    "translate",
    "wait_reply",
    "with_retries",
    "writes",
]
