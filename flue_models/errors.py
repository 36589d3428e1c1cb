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
    """The server runs in Redis Cluster mode, which flue-models does not support yet.

    Example:
        >>> str(ClusterEnabledError()).startswith("The server has Redis Cluster enabled")
        True
    """

    def __init__(self) -> None:
        super().__init__(
            "The server has Redis Cluster enabled (cluster_enabled:1); flue-models needs a "
            "standalone server or a single-shard deployment. Point REDIS_URL at a server "
            "with cluster-enabled no."
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
    """The server is older than the oldest version flue-models supports (Redis 6.2).

    Example:
        >>> ServerVersionError("6.0.16").version
        '6.0.16'
    """

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(
            f"The server runs Redis {version}; flue-models needs Redis 6.2 or newer "
            "(or any Valkey). Upgrade the server or point REDIS_URL at a newer one."
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

    Example:
        >>> "***" in str(ConnectionFailedError("redis://:***@db:6379/0", "refused"))
        True
    """

    def __init__(self, display_url: str, reason: str) -> None:
        self.url = display_url
        super().__init__(
            f"Could not reach the Redis server at {display_url}: {reason}. Check that it "
            "runs and that REDIS_URL (or the url argument) names it."
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
