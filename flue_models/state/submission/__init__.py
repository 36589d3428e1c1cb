"""Submissions: accepted prompts and dispatches, their claims, leases and recovery journal.

:class:`Submission` is one model assembled from one part per seam: admission
(``admission``), claims and leases (``claims``), the recovery journal (``journal``),
attempt markers (``markers``) and session deletion (``deletion``), over the shared row
(``row``). Every state change is a
compare-and-set on the server and times come from the server clock.

Example:
    ```python
    result = await Submission.admit_dispatch("sub-1", session_id="s-1", input={"prompt": "hi"})
    attempt = await Submission.claim("sub-1", owner_id="worker-a")
    await Submission.journal_begin(attempt)
    await Submission.finish(attempt)
    ```
"""

from flue_models.keys import SUBMISSION_BUCKETS, SUBMISSIONS
from flue_models.state.submission.admission import Admitting
from flue_models.state.submission.claims import Claiming
from flue_models.state.submission.deletion import Deleting
from flue_models.state.submission.journal import Journal, Journaling
from flue_models.state.submission.markers import AttemptMarker, Marking
from flue_models.state.submission.row import (
    DEFAULT_LEASE,
    DEFAULT_TIMEOUT,
    Admission,
    Attempt,
    Kind,
    Outcome,
    Phase,
    Status,
    SubmissionRow,
)


class Submission(Admitting, Claiming, Journaling, Marking, Deleting):
    """One accepted prompt (``direct``) or dispatch, and the state of its processing.

    Example:
        ```python
        result = await Submission.admit_dispatch("d-1", session_id="s-1", input={})
        attempt = await Submission.claim("d-1", owner_id="worker-a")
        await Submission.finish(attempt)
        ```
    """

    class Meta:
        collection = SUBMISSIONS
        order_by = "sequence"
        buckets = SUBMISSION_BUCKETS
        partition_by = "session_id"


__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TIMEOUT",
    "SUBMISSION_BUCKETS",
    "Admission",
    "Attempt",
    "AttemptMarker",
    "Journal",
    "Kind",
    "Outcome",
    "Phase",
    "Status",
    "Submission",
    "SubmissionRow",
]
