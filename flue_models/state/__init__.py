"""The state of a Flue-style agent runtime: workflow runs and event streams.

Example:
    ```python
    from flue_models import WorkflowRun, EventStream

    run = await WorkflowRun.start("summarize", input={"text": "..."})
    await run.events.append({"type": "log", "message": "started"})
    ```
"""

from flue_models.state.events import (
    ChunkSegment,
    Event,
    EventStream,
    ReadResult,
    StreamInfo,
    format_offset,
    parse_offset,
    tail_many,
)
from flue_models.state.integrity import StateReport, verify_state
from flue_models.state.retention import PruneReport, Retention, prune, prune_all
from flue_models.state.run import EndResult, RunPointer, WorkflowRun
from flue_models.state.session import (
    Ancestor,
    ForkOrigin,
    HistoryPage,
    Session,
    session_key,
)
from flue_models.state.session_window import CompactionEntry, MessageEntry, SessionContext
from flue_models.state.submission import (
    Admission,
    Attempt,
    AttemptMarker,
    Journal,
    Submission,
)

__all__ = [
    "Admission",
    "Ancestor",
    "Attempt",
    "AttemptMarker",
    "ChunkSegment",
    "CompactionEntry",
    "EndResult",
    "Event",
    "EventStream",
    "ForkOrigin",
    "HistoryPage",
    "Journal",
    "MessageEntry",
    "PruneReport",
    "ReadResult",
    "Retention",
    "RunPointer",
    "Session",
    "SessionContext",
    "StateReport",
    "StreamInfo",
    "Submission",
    "WorkflowRun",
    "format_offset",
    "parse_offset",
    "prune",
    "prune_all",
    "session_key",
    "tail_many",
    "verify_state",
]
