"""flue-models: durable, shared state for agents and workflow runs in Redis or Valkey.

Example:
    ```python
    import flue_models as fm

    async with fm.connect() as db:   # REDIS_URL, else an embedded server under ./.flue/
        print(db.report)
    ```

Names are imported on first use (PEP 562), so ``import flue_models`` and the command line
start fast; type checkers see the ordinary imports below.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; importing typing here would cost ~5 ms
if TYPE_CHECKING:
    from typing import Any

    from flue_models import schema
    from flue_models.config import parse_url, redact_url
    from flue_models.connection import Database, current_database, open_database
    from flue_models.errors import (
        AuthenticationFailedError,
        BatchCommandError,
        ClusterEnabledError,
        ConfigurationError,
        ConnectionFailedError,
        CorruptDataError,
        CorruptValueError,
        DatabaseRefusedError,
        EmbeddedServerError,
        EvictionPolicyError,
        FlueModelsError,
        ForeignSchemaError,
        InvalidURLError,
        NotConnectedError,
        NotRedisError,
        OutOfMemoryError,
        PersistenceWarning,
        SchemaMissingError,
        SchemaStampError,
        ScriptError,
        ServerCheckError,
        ServerUnverifiableError,
        ServerVersionError,
        TLSHandshakeError,
        WrongKeyTypeError,
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
        DuplicateWriteError,
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
    from flue_models.startup import Connecting, connect
    from flue_models.state import (
        Admission,
        Attempt,
        CompactionEntry,
        EndResult,
        Event,
        EventStream,
        MessageEntry,
        ReadResult,
        RunPage,
        RunPointer,
        Session,
        SessionContext,
        SessionError,
        StreamClosedError,
        StreamConflictError,
        StreamError,
        StreamInfo,
        StreamNotFoundError,
        StreamOffsetError,
        Submission,
        SubmissionError,
        WorkflowRun,
        session_key,
        tail_many,
    )

__version__ = "0.1.0"

#: Where each public name lives (``|module`` marks a submodule exported as such).
_EXPORTS: dict[str, str] = {
    "SchemaStampError": "flue_models.errors",
    "SchemaMissingError": "flue_models.errors",
    "ForeignSchemaError": "flue_models.errors",
    "DuplicateWriteError": "flue_models.model",
    "WrongKeyTypeError": "flue_models.errors",
    "ScriptError": "flue_models.errors",
    "OutOfMemoryError": "flue_models.errors",
    "CorruptValueError": "flue_models.errors",
    "CorruptDataError": "flue_models.errors",
    "Admission": "flue_models.state",
    "AllOf": "flue_models.model",
    "AlreadyExistsError": "flue_models.model",
    "Attempt": "flue_models.state",
    "AuthenticationFailedError": "flue_models.errors",
    "BatchCommandError": "flue_models.errors",
    "Bound": "flue_models.model",
    "ClusterEnabledError": "flue_models.errors",
    "CompactionEntry": "flue_models.state",
    "Condition": "flue_models.model",
    "ConfigurationError": "flue_models.errors",
    "ConflictError": "flue_models.model",
    "Connecting": "flue_models.startup",
    "ConnectionFailedError": "flue_models.errors",
    "Database": "flue_models.connection",
    "DatabaseRefusedError": "flue_models.errors",
    "DecodeError": "flue_models.model",
    "Drift": "flue_models.model",
    "EmbeddedServerError": "flue_models.errors",
    "EncodingError": "flue_models.model",
    "EndResult": "flue_models.state",
    "Event": "flue_models.state",
    "EventStream": "flue_models.state",
    "EvictionPolicyError": "flue_models.errors",
    "FieldRef": "flue_models.model",
    "FlueModelsError": "flue_models.errors",
    "Indexed": "flue_models.model",
    "InvalidURLError": "flue_models.errors",
    "KeySpace": "flue_models.keys",
    "MessageEntry": "flue_models.state",
    "Model": "flue_models.model",
    "NotConnectedError": "flue_models.errors",
    "NotRedisError": "flue_models.errors",
    "Page": "flue_models.model",
    "PersistenceWarning": "flue_models.errors",
    "Query": "flue_models.model",
    "QueryError": "flue_models.model",
    "ReadResult": "flue_models.state",
    "RunPage": "flue_models.state",
    "RunPointer": "flue_models.state",
    "ServerCheckError": "flue_models.errors",
    "ServerReport": "flue_models.inspection",
    "ServerUnverifiableError": "flue_models.errors",
    "ServerVersionError": "flue_models.errors",
    "Session": "flue_models.state",
    "SessionContext": "flue_models.state",
    "SessionError": "flue_models.state",
    "StreamClosedError": "flue_models.state",
    "StreamConflictError": "flue_models.state",
    "StreamError": "flue_models.state",
    "StreamInfo": "flue_models.state",
    "StreamNotFoundError": "flue_models.state",
    "StreamOffsetError": "flue_models.state",
    "Submission": "flue_models.state",
    "SubmissionError": "flue_models.state",
    "TLSHandshakeError": "flue_models.errors",
    "Unique": "flue_models.model",
    "UniqueViolationError": "flue_models.model",
    "VerifyReport": "flue_models.model",
    "WorkflowRun": "flue_models.state",
    "connect": "flue_models.startup",
    "current_database": "flue_models.connection",
    "in_": "flue_models.model",
    "inspect_server": "flue_models.inspection",
    "new_id": "flue_models.model",
    "now": "flue_models.model",
    "open_database": "flue_models.connection",
    "parse_url": "flue_models.config",
    "read_server": "flue_models.inspection",
    "redact_url": "flue_models.config",
    "schema": "flue_models.schema|module",
    "session_key": "flue_models.state",
    "tail_many": "flue_models.state",
    "verify_collection": "flue_models.model",
}


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'flue_models' has no attribute {name!r}")
    module_name, _, kind = where.partition("|")
    module = importlib.import_module(module_name)
    value = module if kind == "module" else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Admission",
    "AllOf",
    "AlreadyExistsError",
    "Attempt",
    "AuthenticationFailedError",
    "BatchCommandError",
    "Bound",
    "ClusterEnabledError",
    "CompactionEntry",
    "Condition",
    "ConfigurationError",
    "ConflictError",
    "Connecting",
    "ConnectionFailedError",
    "CorruptDataError",
    "CorruptValueError",
    "Database",
    "DatabaseRefusedError",
    "DecodeError",
    "Drift",
    "DuplicateWriteError",
    "EmbeddedServerError",
    "EncodingError",
    "EndResult",
    "Event",
    "EventStream",
    "EvictionPolicyError",
    "FieldRef",
    "FlueModelsError",
    "ForeignSchemaError",
    "Indexed",
    "InvalidURLError",
    "KeySpace",
    "MessageEntry",
    "Model",
    "NotConnectedError",
    "NotRedisError",
    "OutOfMemoryError",
    "Page",
    "PersistenceWarning",
    "Query",
    "QueryError",
    "ReadResult",
    "RunPage",
    "RunPointer",
    "SchemaMissingError",
    "SchemaStampError",
    "ScriptError",
    "ServerCheckError",
    "ServerReport",
    "ServerUnverifiableError",
    "ServerVersionError",
    "Session",
    "SessionContext",
    "SessionError",
    "StreamClosedError",
    "StreamConflictError",
    "StreamError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamOffsetError",
    "Submission",
    "SubmissionError",
    "TLSHandshakeError",
    "Unique",
    "UniqueViolationError",
    "VerifyReport",
    "WorkflowRun",
    "WrongKeyTypeError",
    "connect",
    "current_database",
    "in_",
    "inspect_server",
    "new_id",
    "now",
    "open_database",
    "parse_url",
    "read_server",
    "redact_url",
    "schema",
    "session_key",
    "tail_many",
    "verify_collection",
]
