"""flue-models: durable, shared state for agents and workflow runs in Redis or Valkey.

Example:
    ```python
    import flue_models as fm

    async with fm.connect() as db:   # REDIS_URL, else an embedded server under ./.flue/
        print(db.report)
    ```

Names are imported on first use (PEP 562), so ``import flue_models`` and the command line
start fast. ``_EXPORTS`` is the one list of public names (``__all__`` is made from it);
type checkers read the imports under ``TYPE_CHECKING``, which a test holds equal to it.
Every error class is in :mod:`flue_models.errors` (``fm.errors``); the roots and the
leaves callers catch are exported here too.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; importing typing here would cost ~5 ms
if TYPE_CHECKING:
    from typing import Any

    from flue_models import errors as errors, schema as schema
    from flue_models.client import (
        ClientSettings as ClientSettings,
        RetryPolicy as RetryPolicy,
    )
    from flue_models.connection import (
        Database as Database,
    )
    from flue_models.errors import (
        AdmissionConflictError as AdmissionConflictError,
        AlreadyExistsError as AlreadyExistsError,
        AuthenticationFailedError as AuthenticationFailedError,
        ConfigurationError as ConfigurationError,
        ConflictError as ConflictError,
        ConnectionFailedError as ConnectionFailedError,
        ConnectionLostError as ConnectionLostError,
        CorruptDataError as CorruptDataError,
        DecodeError as DecodeError,
        EncodingError as EncodingError,
        FlueModelsError as FlueModelsError,
        NotFoundError as NotFoundError,
        NotReplicatedError as NotReplicatedError,
        PersistenceWarning as PersistenceWarning,
        QueryError as QueryError,
        SchemaError as SchemaError,
        SchemaTooNewError as SchemaTooNewError,
        ServerCheckError as ServerCheckError,
        SessionBusyError as SessionBusyError,
        SessionDeletingError as SessionDeletingError,
        SessionForkedError as SessionForkedError,
        SkippedRecordWarning as SkippedRecordWarning,
        StreamClosedError as StreamClosedError,
        StreamConflictError as StreamConflictError,
        StreamNotFoundError as StreamNotFoundError,
        UnavailableError as UnavailableError,
        UniqueViolationError as UniqueViolationError,
    )
    from flue_models.model import (
        Indexed as Indexed,
        Model as Model,
        Page as Page,
        Query as Query,
        Unique as Unique,
        VerifyReport as VerifyReport,
        any_of as any_of,
        in_ as in_,
        make_id as make_id,
        new_id as new_id,
        not_ as not_,
        now as now,
        repair_collection as repair_collection,
        verify_collection as verify_collection,
    )
    from flue_models.startup import (
        Connecting as Connecting,
        connect as connect,
    )
    from flue_models.state import (
        Admission as Admission,
        Attempt as Attempt,
        CompactionEntry as CompactionEntry,
        EndResult as EndResult,
        Event as Event,
        EventStream as EventStream,
        HistoryPage as HistoryPage,
        Journal as Journal,
        MessageEntry as MessageEntry,
        PruneReport as PruneReport,
        ReadResult as ReadResult,
        Retention as Retention,
        Session as Session,
        SessionContext as SessionContext,
        StateReport as StateReport,
        Submission as Submission,
        WorkflowRun as WorkflowRun,
        prune as prune,
        prune_all as prune_all,
        session_key as session_key,
        tail_many as tail_many,
        verify_state as verify_state,
    )

__version__ = "0.1.0"

#: Every public name and where it lives (``|module`` marks a submodule exported as such).
_EXPORTS: dict[str, str] = {
    "connect": "flue_models.startup",
    "Connecting": "flue_models.startup",
    "Database": "flue_models.connection",
    "ClientSettings": "flue_models.client",
    "RetryPolicy": "flue_models.client",
    "Model": "flue_models.model",
    "Indexed": "flue_models.model",
    "Unique": "flue_models.model",
    "make_id": "flue_models.model",
    "new_id": "flue_models.model",
    "now": "flue_models.model",
    "in_": "flue_models.model",
    "any_of": "flue_models.model",
    "not_": "flue_models.model",
    "Query": "flue_models.model",
    "Page": "flue_models.model",
    "verify_collection": "flue_models.model",
    "repair_collection": "flue_models.model",
    "VerifyReport": "flue_models.model",
    "WorkflowRun": "flue_models.state",
    "EndResult": "flue_models.state",
    "EventStream": "flue_models.state",
    "Event": "flue_models.state",
    "ReadResult": "flue_models.state",
    "tail_many": "flue_models.state",
    "Session": "flue_models.state",
    "MessageEntry": "flue_models.state",
    "CompactionEntry": "flue_models.state",
    "SessionContext": "flue_models.state",
    "HistoryPage": "flue_models.state",
    "session_key": "flue_models.state",
    "Submission": "flue_models.state",
    "Admission": "flue_models.state",
    "Attempt": "flue_models.state",
    "Journal": "flue_models.state",
    "Retention": "flue_models.state",
    "PruneReport": "flue_models.state",
    "prune": "flue_models.state",
    "prune_all": "flue_models.state",
    "verify_state": "flue_models.state",
    "StateReport": "flue_models.state",
    "errors": "flue_models.errors|module",
    "schema": "flue_models.schema|module",
    "FlueModelsError": "flue_models.errors",
    "ConfigurationError": "flue_models.errors",
    "QueryError": "flue_models.errors",
    "EncodingError": "flue_models.errors",
    "UnavailableError": "flue_models.errors",
    "ConnectionFailedError": "flue_models.errors",
    "AuthenticationFailedError": "flue_models.errors",
    "ConnectionLostError": "flue_models.errors",
    "NotReplicatedError": "flue_models.errors",
    "ConflictError": "flue_models.errors",
    "AlreadyExistsError": "flue_models.errors",
    "UniqueViolationError": "flue_models.errors",
    "StreamClosedError": "flue_models.errors",
    "StreamConflictError": "flue_models.errors",
    "AdmissionConflictError": "flue_models.errors",
    "SessionBusyError": "flue_models.errors",
    "SessionDeletingError": "flue_models.errors",
    "SessionForkedError": "flue_models.errors",
    "NotFoundError": "flue_models.errors",
    "StreamNotFoundError": "flue_models.errors",
    "CorruptDataError": "flue_models.errors",
    "DecodeError": "flue_models.errors",
    "SchemaError": "flue_models.errors",
    "SchemaTooNewError": "flue_models.errors",
    "ServerCheckError": "flue_models.errors",
    "PersistenceWarning": "flue_models.errors",
    "SkippedRecordWarning": "flue_models.errors",
}

__all__ = list(_EXPORTS)  # one list: the table above


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
