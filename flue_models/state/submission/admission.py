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
    AlreadyExistsError,
    DecodeError,
    EncodingError,
    GuardError,
    SessionDeletingError,
)
from flue_models.model.codec import EPOCH, value_problem
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
        # On one server the write checks, atomically, that the id is held in no other
        # bucket and has no receipt (guards), so a new admission is one round trip; on a
        # cluster those keys are in other slots: they are read first.
        one_server = database.batches_in_order
        guard = [deleting]
        if one_server:
            own = cls.__flue_spec__.record_key(database.keys, submission_id, session_id)
            others = cls.__flue_spec__.candidate_keys(database.keys, submission_id)
            guard += [receipt_key, *(key for key in others if key != own)]

        async def attempt() -> Admission:
            if not one_server:
                found = await cls._admitted(database, submission_id, receipt_key, wanted)
                if found is not None:
                    return found
            # Its sequence and its time are the server's, given as the row lands (the
            # script's counter, read as microseconds since the epoch); a refused write
            # (a replay, a session being deleted) takes no number.
            row = cls(
                id=submission_id,
                session_id=session_id,
                kind=kind,
                input=input,
                sequence=0,
                accepted_at=EPOCH,
                open_session=session_id,
            )
            try:
                await row._write(database, guard=guard, admitting=True, one_server=one_server)
                return Admission(row, created=True)
            except (GuardError, AlreadyExistsError) as exc:
                if isinstance(exc, GuardError) and exc.key == deleting:
                    raise SessionDeletingError(session_id) from None
                if not one_server:
                    raise  # a racing admission: the next attempt reads its row
            # One server: the id is held (here or in another session) or has a receipt.
            found = await cls._admitted(database, submission_id, receipt_key, wanted)
            if found is None:  # gone since (a deletion that kept no receipt): again
                raise AlreadyExistsError(cls.__name__, submission_id, 0)
            return found

        # A racing admission of the same id wins with AlreadyExistsError (a conflict):
        # the next attempt reads its row and compares, as a replay would.
        return await retry_on_conflict(attempt)

    @classmethod
    async def _admitted(
        cls, database: Database, submission_id: str, receipt_key: str, wanted: str
    ) -> Admission | None:
        """What an admission of ``submission_id`` found already there: its row (a replay
        or a conflict) or its receipt (its session was deleted); ``None``: neither."""
        # The receipt is read after the row: a deletion keeps it before it removes the
        # row, so a row found missing has its receipt by then. In the same batch where
        # the batch runs in order (one server); a cluster reads it once more after.
        row, _now, receipt_raw = await cls._read_then(database, submission_id, ("GET", receipt_key))
        if row is not None:
            same = digest(row.session_id, row.kind, row.input) == wanted
            return Admission(row, created=False, conflict=not same)
        if receipt_raw is None and not database.batches_in_order:
            receipt_raw = await database.client.get(receipt_key)
        if receipt_raw is None:
            return None
        try:
            receipt = json.loads(receipt_raw)
            same = receipt["digest"] == wanted
        except (ValueError, TypeError, KeyError) as exc:
            problem = f"holds {receipt_raw[:80]!r}, not a receipt ({exc!r})"
            raise DecodeError(receipt_key, "receipt", problem) from None
        return Admission(None, created=False, conflict=not same, receipt=receipt)

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
