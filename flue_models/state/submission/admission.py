"""Admission: accepting a prompt or dispatch, idempotently on its id.

Example:
    ```python
    result = await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
    ```
"""

from __future__ import annotations

import json
from typing import Any, Self

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    AdmissionConflictError,
    DecodeError,
    EncodingError,
    GuardError,
    SessionDeletingError,
)
from flue_models.model.codec import value_problem
from flue_models.model.writes import retry_on_conflict
from flue_models.state.submission.row import Admission, Kind, SubmissionRow, digest


class Admitting(SubmissionRow):
    """The admission part of :class:`~flue_models.state.submission.Submission`.

    Example:
        ```python
        row = await Submission.admit_direct("p-1", session_id="s-1", input={"prompt": "hi"})
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def _admit(
        cls, kind: Kind, submission_id: str, session_id: str, input: Any, db: Database | None
    ) -> Admission:
        database = pick_database(db)
        problem = value_problem({"session_id": session_id, "input": input}, text_keys=True)
        if problem:
            raise EncodingError(f"Submission {submission_id!r} {problem}; nothing was admitted.")
        wanted = digest(session_id, kind, input)
        receipt_key = database.keys.receipt(submission_id).receipt
        deleting = database.keys.session_submissions(session_id).deleting

        async def attempt() -> Admission:
            # The receipt is read after the row: a deletion keeps it before it removes the
            # row, so a row found missing has its receipt by then. In the same batch where
            # the batch runs in order (one server); a cluster reads it once more after.
            row, now, receipt_raw = await cls._read_then(
                database, submission_id, ("GET", receipt_key)
            )
            if row is not None:
                same = digest(row.session_id, row.kind, row.input) == wanted
                return Admission(row, created=False, conflict=not same)
            if receipt_raw is None and not database.batches_in_order:
                receipt_raw = await database.client.get(receipt_key)
            if receipt_raw is not None:
                try:
                    receipt = json.loads(receipt_raw)
                    same = receipt["digest"] == wanted
                except (ValueError, TypeError, KeyError) as exc:
                    problem = f"holds {receipt_raw[:80]!r}, not a receipt ({exc!r})"
                    raise DecodeError(receipt_key, "receipt", problem) from None
                return Admission(None, created=False, conflict=not same, receipt=receipt)
            # A session being deleted refuses the write itself (its marker is a guard of
            # the save script), so no number is taken and no round trip asks first.
            row = cls(
                id=submission_id,
                session_id=session_id,
                kind=kind,
                input=input,
                sequence=0,  # the script assigns the next number as the row lands
                accepted_at=now,
                open_session=session_id,
            )
            try:
                await row._write(database, guard=[deleting], admitting=True)
            except GuardError:
                raise SessionDeletingError(session_id) from None
            return Admission(row, created=True)

        # A racing admission of the same id wins with AlreadyExistsError (a conflict):
        # the next attempt reads its row and compares, as a replay would.
        return await retry_on_conflict(attempt)

    @classmethod
    async def admit_dispatch(
        cls, submission_id: str, *, session_id: str, input: Any, db: Database | None = None
    ) -> Admission:
        """Admit a dispatch, idempotently on its id; a conflict is reported in the result.

        An exact replay returns the same row and takes no new sequence number; the same id
        with another payload, session or kind returns ``conflict=True``. Re-admitting the
        id of a submission whose session was deleted returns its retained receipt. Safe to
        retry.

        Raises:
            SessionDeletingError: the session is being deleted.

        Example:
            ```python
            result = await Submission.admit_dispatch("d-1", session_id="s-1", input={})
            ```
        """
        return await cls._admit("dispatch", submission_id, session_id, input, db)

    @classmethod
    async def admit_direct(
        cls, submission_id: str, *, session_id: str, input: Any, db: Database | None = None
    ) -> Self:
        """Admit a direct prompt, idempotently on its id. Safe to retry.

        Raises:
            AdmissionConflictError: the id was admitted with another payload, session or
                kind.
            SessionDeletingError: the session is being deleted.

        Example:
            ```python
            row = await Submission.admit_direct("p-1", session_id="s-1", input={})
            ```
        """
        result = await cls._admit("direct", submission_id, session_id, input, db)
        row = result.submission
        if result.conflict or not isinstance(row, cls):
            raise AdmissionConflictError(submission_id)
        return row
