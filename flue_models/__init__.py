"""flue-models: durable, shared state for agents and workflow runs in Redis or Valkey.

Example:
    ```python
    import flue_models as fm

    async with fm.connect() as db:   # REDIS_URL, else an embedded server under ./.flue/
        print(db.report)
    ```
"""

from flue_models.config import parse_url, redact_url
from flue_models.connection import Connecting, Database, connect, current_database
from flue_models.errors import (
    BatchCommandError,
    ClusterEnabledError,
    ConfigurationError,
    ConnectionFailedError,
    EmbeddedServerError,
    EvictionPolicyError,
    FlueModelsError,
    InvalidURLError,
    NotConnectedError,
    PersistenceWarning,
    ServerCheckError,
    ServerUnverifiableError,
    ServerVersionError,
)
from flue_models.inspection import ServerReport, inspect_server, read_server
from flue_models.keys import KeySpace

__version__ = "0.1.0"

__all__ = [
    "BatchCommandError",
    "ClusterEnabledError",
    "ConfigurationError",
    "Connecting",
    "ConnectionFailedError",
    "Database",
    "EmbeddedServerError",
    "EvictionPolicyError",
    "FlueModelsError",
    "InvalidURLError",
    "KeySpace",
    "NotConnectedError",
    "PersistenceWarning",
    "ServerCheckError",
    "ServerReport",
    "ServerUnverifiableError",
    "ServerVersionError",
    "connect",
    "current_database",
    "inspect_server",
    "parse_url",
    "read_server",
    "redact_url",
]
