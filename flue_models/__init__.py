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
from flue_models.model import (
    AllOf,
    AlreadyExistsError,
    Bound,
    Condition,
    ConflictError,
    DecodeError,
    Drift,
    EncodingError,
    FieldRef,
    Indexed,
    Model,
    Page,
    Query,
    QueryError,
    Unique,
    UniqueViolationError,
    VerifyReport,
    in_,
    new_id,
    now,
    verify_collection,
)
from flue_models.state import (
    EndResult,
    Event,
    EventStream,
    ReadResult,
    RunPage,
    RunPointer,
    StreamClosedError,
    StreamConflictError,
    StreamError,
    StreamInfo,
    StreamNotFoundError,
    StreamOffsetError,
    WorkflowRun,
    tail_many,
)

__version__ = "0.1.0"

__all__ = [
    "AllOf",
    "AlreadyExistsError",
    "BatchCommandError",
    "Bound",
    "ClusterEnabledError",
    "Condition",
    "ConfigurationError",
    "ConflictError",
    "Connecting",
    "ConnectionFailedError",
    "Database",
    "DecodeError",
    "Drift",
    "EmbeddedServerError",
    "EncodingError",
    "EndResult",
    "Event",
    "EventStream",
    "EvictionPolicyError",
    "FieldRef",
    "FlueModelsError",
    "Indexed",
    "InvalidURLError",
    "KeySpace",
    "Model",
    "NotConnectedError",
    "Page",
    "PersistenceWarning",
    "Query",
    "QueryError",
    "ReadResult",
    "RunPage",
    "RunPointer",
    "ServerCheckError",
    "ServerReport",
    "ServerUnverifiableError",
    "ServerVersionError",
    "StreamClosedError",
    "StreamConflictError",
    "StreamError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamOffsetError",
    "Unique",
    "UniqueViolationError",
    "VerifyReport",
    "WorkflowRun",
    "connect",
    "current_database",
    "in_",
    "inspect_server",
    "new_id",
    "now",
    "parse_url",
    "read_server",
    "redact_url",
    "tail_many",
    "verify_collection",
]
