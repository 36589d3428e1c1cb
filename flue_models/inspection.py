"""Start-up checks of the server: version, Cluster, eviction policy, persistence.

Each setting is read with ``CONFIG GET`` first and ``INFO`` as the fallback, because
managed services often deny ``CONFIG`` but allow ``INFO``. Both RESP2 and RESP3 reply
shapes are accepted, and raw ``INFO`` text is split on ``\\r\\n``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from flue_models.client import RAW, FlueRedis, RetryPolicy, with_retries
from flue_models.errors import (
    CommandError,
    PersistenceWarning,
    ServerCheckError,
)
from flue_models.replies import reply_pairs, reply_text

#: The oldest version flue-models accepts, per server family (Redis 7.0 brought script
#: flags; Valkey began at 7.2).
MINIMUM_VERSIONS: dict[str, tuple[int, ...]] = {"redis": (7, 0), "valkey": (7, 2)}

#: What a server's refusal of a command raises: redis-py's error on a plain client, the
#: library's on a :class:`~flue_models.client.FlueRedis`.
REFUSED = (ResponseError, CommandError)


@dataclass(frozen=True)
class Replica:
    """One replica of a server, as its primary sees it (``INFO replication``).

    Example:
        >>> Replica("127.0.0.1:7003", "online", 0).text()
        '127.0.0.1:7003 online, lag 0 s'
    """

    address: str
    state: str
    #: Seconds since the replica last acknowledged the stream, if given.
    lag: int | None

    def text(self) -> str:
        """The replica as ``flue-models check`` shows it."""
        lag = "" if self.lag is None else f", lag {self.lag} s"
        return f"{self.address} {self.state}{lag}"


def replicas_of(info: Mapping[str, str]) -> tuple[Replica, ...]:
    """The replicas an ``INFO replication`` reply lists (its ``slaveN`` fields, as
    :func:`parse_info` gives them).

    Example:
        >>> replicas_of({"slave0": "ip=10.0.0.2,port=7003,state=online,offset=9,lag=1"})
        (Replica(address='10.0.0.2:7003', state='online', lag=1),)
    """
    found = []
    for name, value in info.items():
        if not (name.startswith("slave") and name[5:].isdigit()):
            continue
        fields = dict(part.split("=", 1) for part in reply_text(value).split(",") if "=" in part)
        lag = fields.get("lag", "")
        found.append(
            Replica(
                f"{fields.get('ip', '?')}:{fields.get('port', '?')}",
                fields.get("state", "unknown"),
                int(lag) if lag.strip().lstrip("-").isdigit() else None,
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class ServerReport:
    """What the server says about itself; ``None`` marks a setting that could not be read.

    Example:
        >>> report = ServerReport("7.2.4", "redis", False, "noeviction", True, False)
        >>> report.persistence
        'AOF'
    """

    version: str | None
    flavor: str
    cluster_enabled: bool | None
    maxmemory_policy: str | None
    aof_enabled: bool | None
    rdb_enabled: bool | None
    #: Bytes the server uses (INFO memory ``used_memory``), if readable.
    used_memory: int | None = None
    #: The server's ``maxmemory`` in bytes (0: no limit), if readable.
    maxmemory: int | None = None
    #: On a cluster, the report of every primary (this report is the first one's);
    #: empty for a standalone server.
    primaries: tuple[ServerReport, ...] = ()
    #: The node this report is of (``host:port``), on a cluster.
    node: str | None = None
    #: Its replicas (``None``: INFO replication could not be read).
    replicas: tuple[Replica, ...] | None = None

    @property
    def persistence(self) -> str:
        """Describe the persistence in force: ``AOF+RDB``, ``AOF``, ``RDB``, ``none`` or unknown.

        Example:
            >>> ServerReport("7.0.0", "redis", False, "noeviction", False, None).persistence
            'unknown (AOF off, RDB not readable)'
        """
        if self.aof_enabled is None and self.rdb_enabled is None:
            return "unknown"
        if self.aof_enabled is None or self.rdb_enabled is None:
            known = "AOF" if self.aof_enabled is not None else "RDB"
            state = "on" if (self.aof_enabled or self.rdb_enabled) else "off"
            other = "RDB" if known == "AOF" else "AOF"
            return f"unknown ({known} {state}, {other} not readable)"
        parts = [name for name, on in (("AOF", self.aof_enabled), ("RDB", self.rdb_enabled)) if on]
        return "+".join(parts) if parts else "none"

    def lines(self) -> list[str]:
        """Return the report as ``name: value`` lines, as ``flue-models check`` prints them.

        Example:
            >>> ServerReport("7.0.15", "redis", False, "noeviction", True, True).lines()[0]
            'server: redis 7.0.15'
        """

        def show(value: object) -> str:
            return "unknown" if value is None else str(value)

        cluster = (
            None if self.cluster_enabled is None else ("on" if self.cluster_enabled else "off")
        )
        if self.primaries:
            replicas = sum(len(p.replicas or ()) for p in self.primaries)
            lines = [
                f"server: {self.flavor} {show(self.version)}",
                f"cluster: on, {len(self.primaries)} primaries, {replicas} replicas",
            ]
            for primary in self.primaries:
                lines += [
                    f"primary {primary.node}: {primary.flavor} {show(primary.version)}, "
                    f"maxmemory-policy {show(primary.maxmemory_policy)}, "
                    f"persistence {primary.persistence}, "
                    f"memory {memory_text(primary.used_memory, primary.maxmemory)}",
                    f"  replicas: {primary.replicas_text()}",
                ]
            return lines
        return [
            f"server: {self.flavor} {show(self.version)}",
            f"cluster: {show(cluster)}",
            f"maxmemory-policy: {show(self.maxmemory_policy)}",
            f"persistence: {self.persistence}",
            f"memory: {memory_text(self.used_memory, self.maxmemory)}",
            f"replicas: {self.replicas_text()}",
        ]

    def replicas_text(self) -> str:
        """This server's replicas, as ``flue-models check`` shows them.

        Example:
            >>> ServerReport("7.2.4", "redis", False, "noeviction", True, True).replicas_text()
            'unknown'
        """
        if self.replicas is None:
            return "unknown"
        return "; ".join(r.text() for r in self.replicas) or "none"

    def summary(self) -> str:
        """What passing the start-up checks meant for this deployment.

        Example:
            >>> ServerReport("7.2.4", "redis", False, "noeviction", True, True).summary()
            'standalone, noeviction, supported version'
        """
        if self.primaries:
            return (
                f"cluster of {len(self.primaries)} primaries, noeviction and a supported "
                "version on each"
            )
        return "standalone, noeviction, supported version"


class _OnNode:
    """One node of a cluster client, as the readers below call a client."""

    def __init__(self, client: RedisCluster, node: ClusterNode) -> None:
        self.client, self.node = client, node

    async def execute_command(self, *args: Any) -> Any:
        return await self.client.execute_command(*args, target_nodes=self.node)


class ReadAhead:
    """A client whose answers to the commands the inspection may send were read ahead, in
    one round trip (:func:`read_ahead`): each is answered from there (an error reply
    raised as the client would raise it), any other goes to the client.

    Example:
        ```python
        ahead = await read_ahead(db.client)
        ahead.replies[("INFO", "cluster")]   # b'# Cluster\r\ncluster_enabled:0\r\n'
        ```
    """

    def __init__(self, client: Redis, replies: dict[tuple[str, ...], Any]) -> None:
        self.client, self.replies = client, replies

    async def execute_command(self, *args: str) -> Any:
        if args not in self.replies:
            return await self.client.execute_command(*args)  # type: ignore[no-untyped-call]
        reply = self.replies[args]
        if isinstance(reply, Exception):
            raise reply
        return reply


#: What reading one server may ask, in the order it asks (read ahead in one pipeline).
READ_AHEAD: tuple[tuple[str, ...], ...] = (
    ("INFO", "server"),
    ("CONFIG", "GET", "cluster-enabled"),
    ("INFO", "cluster"),
    ("INFO", "memory"),
    ("CONFIG", "GET", "maxmemory-policy"),
    ("CONFIG", "GET", "appendonly"),
    ("CONFIG", "GET", "save"),
    ("INFO", "persistence"),
    ("INFO", "replication"),
)


async def read_ahead(
    client: Redis,
    questions: Sequence[tuple[str, ...]] = READ_AHEAD,
    *,
    policy: RetryPolicy | None = None,
) -> ReadAhead:
    """Return the answers to ``questions`` (all of :data:`READ_AHEAD` by default), read in
    one round trip (retried by ``policy``, the client's by default: a lost connection
    raises the library's error). A command the server refuses (an ACL, a managed
    service) is answered by its error; one not asked goes to the server when read.

    ``connect()`` sends this as its first command: the answers say whether the server is
    a Cluster node and then serve the inspection, with no round trip of their own.

    Example:
        ```python
        report = await read_server(db.client, ahead=await read_ahead(db.client))
        ```
    """

    async def send() -> list[Any]:
        if isinstance(client, FlueRedis):  # the replies as sent: INFO's text is read once
            return await client.flue_many([(command, {RAW: True}) for command in questions])
        async with client.pipeline(transaction=False) as pipe:
            for command in questions:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))

    chosen: RetryPolicy = policy or getattr(client, "flue_policy", None) or RetryPolicy()
    display = getattr(client, "flue_display", "")
    replies = await with_retries(send, chosen, display, "INFO")
    return ReadAhead(client, dict(zip(questions, replies, strict=True)))


Readable = Redis | _OnNode | ReadAhead


async def _call(client: Readable, *args: str) -> Any:
    return await client.execute_command(*args)


def parse_info(reply: Any) -> dict[str, str]:
    """Turn an INFO reply into ``{field: value}``, from raw text or a parsed mapping.

    A field redis-py parsed into a mapping (``slave0``) is given back as INFO writes it,
    ``name=value`` pairs joined by commas.

    Example:
        >>> parse_info(b"# Cluster\\r\\ncluster_enabled:1\\r\\n")
        {'cluster_enabled': '1'}
        >>> parse_info({"slave0": {"ip": "10.0.0.2", "port": 7003}})
        {'slave0': 'ip=10.0.0.2,port=7003'}
    """
    if isinstance(reply, Mapping):
        return {
            reply_text(k): ",".join(f"{reply_text(a)}={reply_text(b)}" for a, b in v.items())
            if isinstance(v, Mapping)
            else reply_text(v)
            for k, v in reply.items()
        }
    fields: dict[str, str] = {}
    for line in reply_text(reply).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value
    return fields


async def _config_get(client: Readable, name: str) -> str | None:
    try:
        reply = await _call(client, "CONFIG", "GET", name)
    except REFUSED:
        return None
    return reply_pairs(reply).get(name)


async def _info(client: Readable, section: str) -> dict[str, str]:
    try:
        reply = await _call(client, "INFO", section)
    except REFUSED:
        return {}
    return parse_info(reply)


async def _version(client: Readable) -> tuple[str | None, str]:
    server = await _info(client, "server")
    if "valkey_version" in server:
        return server["valkey_version"], "valkey"
    if "redis_version" in server:
        return server["redis_version"], "redis"
    try:
        hello = reply_pairs(await _call(client, "HELLO"))
    except REFUSED:
        return None, "redis"
    return hello.get("version"), hello.get("server", "redis")


async def read_server(
    client: Redis | RedisCluster, *, ahead: ReadAhead | None = None
) -> ServerReport:
    """Read the server's version, Cluster state, eviction policy and persistence.

    Never raises for a denied command: what cannot be read is ``None`` in the report.
    Through a cluster client, every primary is read (``primaries``). ``ahead``: the
    answers of a standalone server, already read (:func:`read_ahead`).

    Example:
        ```python
        report = await read_server(db.client)
        print("\\n".join(report.lines()))
        ```
    """
    if isinstance(client, RedisCluster):
        reports = [
            dataclasses.replace(await _read_one(_OnNode(client, n)), node=n.name)
            for n in client.get_primaries()
        ]
        return dataclasses.replace(reports[0], primaries=tuple(reports))
    return await _read_one(ahead or await read_ahead(client))


async def _read_one(client: Readable) -> ServerReport:
    version, flavor = await _version(client)

    cluster_raw = await _config_get(client, "cluster-enabled")
    if cluster_raw is None:
        cluster_raw = (await _info(client, "cluster")).get("cluster_enabled")
    cluster = None if cluster_raw is None else cluster_raw.strip().lower() in ("yes", "1")

    memory = await _info(client, "memory")
    policy = await _config_get(client, "maxmemory-policy")
    if policy is None:
        policy = memory.get("maxmemory_policy")

    aof_raw = await _config_get(client, "appendonly")
    save_raw = await _config_get(client, "save")
    if aof_raw is None:
        aof_raw = (await _info(client, "persistence")).get("aof_enabled")
    aof = None if aof_raw is None else aof_raw.strip().lower() in ("yes", "1")
    rdb = None if save_raw is None else bool(save_raw.strip())
    replication = await _info(client, "replication")
    return ServerReport(
        version=version,
        flavor=flavor,
        cluster_enabled=cluster,
        maxmemory_policy=policy.strip() if policy is not None else None,
        aof_enabled=aof,
        rdb_enabled=rdb,
        used_memory=_int_or_none(memory.get("used_memory")),
        maxmemory=_int_or_none(memory.get("maxmemory")),
        replicas=replicas_of(replication) if replication else None,
    )


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def memory_text(used: int | None, limit: int | None) -> str:
    """Describe memory use in MiB, against ``maxmemory`` when one is set.

    Example:
        >>> memory_text(3 * 2**20, 0)
        '3.0 MiB used, no maxmemory'
        >>> memory_text(2**20, 4 * 2**20)
        '1.0 MiB used of 4.0 MiB (25%)'
    """
    if used is None:
        return "unknown"
    shown = f"{used / 2**20:.1f} MiB used"
    if not limit:
        return shown + ("" if limit is None else ", no maxmemory")
    return f"{shown} of {limit / 2**20:.1f} MiB ({100 * used / limit:.0f}%)"


def version_tuple(version: str) -> tuple[int, ...]:
    """Parse ``"7.0.15"`` into ``(7, 0, 15)``, ignoring any suffix such as ``-rc1``.

    Example:
        >>> version_tuple("6.2.0-rc1")
        (6, 2, 0)
    """
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version.strip())
    if match is None:
        return ()
    return tuple(int(part) for part in match.groups() if part is not None)


def assess(report: ServerReport) -> tuple[ServerCheckError | None, list[str]]:
    """Run :func:`check_report` without raising: the refusal (or ``None``) and the
    warnings it gave, as ``flue-models check`` and the dashboard show them.

    Example:
        >>> bare = ServerReport("7.2.4", "redis", False, "noeviction", False, False)
        >>> problem, warned = assess(bare)
        >>> problem is None, warned[0].startswith("The server keeps nothing on disk")
        (True, True)
    """
    problem = None
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        try:
            check_report(report)
        except ServerCheckError as exc:
            problem = exc
    return problem, [str(w.message) for w in recorded]


def check_report(report: ServerReport) -> None:
    """Raise the first reason to refuse this server; warn when it persists nothing.

    On a cluster, every primary must pass.

    Raises:
        ServerCheckError: Redis older than 7.0, Valkey older than 7.2; Cluster mode on
            and the report read through a client of one node; ``maxmemory-policy`` not
            ``noeviction``; or one of these could not be read at all.

    Example:
        >>> check_report(ServerReport("6.2.14", "redis", False, "noeviction", True, True))
        Traceback (most recent call last):
        ...
        flue_models.errors.ServerCheckError: The server runs redis 6.2.14; ...
    """
    for primary in report.primaries:
        try:
            _check_one(primary, cluster_client=True)
        except ServerCheckError as exc:  # which node, first
            raise ServerCheckError(
                f"primary {primary.node}: {exc}", setting=exc.setting, found=exc.found
            ) from None
    _check_one(report, cluster_client=bool(report.primaries))
    bare = [
        p
        for p in report.primaries or (report,)
        if p.aof_enabled is False and p.rdb_enabled is False
    ]
    if bare:
        where = "" if not report.primaries else f" on {', '.join(str(p.node) for p in bare)}"
        warnings.warn(
            f"The server keeps nothing on disk{where} (appendonly no, save ''): agent "
            "state survives restarts of your process but not a restart of the server. "
            "Enable AOF (appendonly yes, appendfsync everysec) or RDB snapshots.",
            PersistenceWarning,
            stacklevel=3,
        )


def _check_one(report: ServerReport, *, cluster_client: bool) -> None:
    if report.version is None:
        raise ServerCheckError.unverifiable("version")
    minimum = MINIMUM_VERSIONS.get(report.flavor, MINIMUM_VERSIONS["redis"])
    if version_tuple(report.version) < minimum:
        raise ServerCheckError.version(report.version, report.flavor)
    if report.cluster_enabled is None:
        raise ServerCheckError.unverifiable("cluster-enabled setting")
    if report.cluster_enabled and not cluster_client:
        raise ServerCheckError.cluster_enabled()
    if report.maxmemory_policy is None:
        raise ServerCheckError.unverifiable("maxmemory-policy")
    if report.maxmemory_policy != "noeviction":
        raise ServerCheckError.eviction_policy(report.maxmemory_policy)


async def inspect_server(
    client: Redis | RedisCluster, *, ahead: ReadAhead | None = None
) -> ServerReport:
    """Read the server and refuse it when it could lose state; return what was read.

    ``ahead``: as in :func:`read_server`.

    Example:
        ```python
        report = await inspect_server(db.client)   # raises e.g. ServerCheckError
        ```
    """
    report = await read_server(client, ahead=ahead)
    check_report(report)
    return report
