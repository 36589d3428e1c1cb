"""Deleting a session's submissions, keeping the receipts replays are answered with.

Example:
    ```python
    removed = await Submission.delete_session("s-1")
    ```
"""

from __future__ import annotations

import json

from flue_models.connection import Database, pick_database
from flue_models.model.errors import ConflictError
from flue_models.replies import reply_text
from flue_models.state.submission.row import SessionBusyError, SubmissionRow, digest


class Deleting(SubmissionRow):
    """The session-deletion part of :class:`~flue_models.state.submission.Submission`.

    Example:
        ```python
        for session_id in await Submission.interrupted_deletions():
            await Submission.delete_session(session_id)
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def delete_session(cls, session_id: str, *, db: Database | None = None) -> int:
        """Delete a session's settled submissions and journals, keeping dispatch receipts.

        Refused while anything is queued or running. While it runs, admissions into the
        session are refused. An interrupted deletion is listed by
        :meth:`interrupted_deletions` and finished by calling this again. Returns the
        number of submissions removed.

        Raises:
            SessionBusyError: a submission of the session is queued or running.

        Example:
            ```python
            removed = await Submission.delete_session("s-1")
            ```
        """
        database = pick_database(db)
        keys = database.keys
        marker = cls._deleting_key(keys, session_id)
        deletions = cls._collection_key(keys, "deletions")
        await database.run_batch(
            [("SET", marker, "1"), ("SADD", deletions, session_id)], atomic=True
        )
        open_count = int(
            await database.client.zcard(cls._index_key(keys, "open_session", session_id))
        )
        if open_count:
            await cls._end_deletion(database, session_id)
            raise SessionBusyError(session_id, open_count)
        removed = 0
        receipts = cls._collection_key(keys, "receipts")
        by_session = cls._index_key(keys, "session_id", session_id)
        query = cls.find(cls.session_id == session_id).using(database)
        while True:
            page = await query.id_page(limit=200)
            if not page.ids:
                break
            for submission_id in page.ids:
                row, _now = await cls._read(database, submission_id)
                if row is None:  # an entry without a row (or a quarantined row): drop it
                    await database.client.zrem(by_session, submission_id)
                    continue
                if row.kind == "dispatch":
                    receipt = {
                        "id": row.id,
                        "session_id": row.session_id,
                        "digest": digest(row.session_id, row.kind, row.input),
                        "accepted_at": row.accepted_at.isoformat(timespec="microseconds"),
                        "sequence": row.sequence,
                        "outcome": row.outcome,
                    }
                    await database.client.hset(receipts, row.id, json.dumps(receipt))
                try:
                    if await row.delete(db=database):
                        removed += 1
                except ConflictError:
                    continue  # changed meanwhile: the next page reads it again
        await cls._end_deletion(database, session_id)
        return removed

    @classmethod
    async def _end_deletion(cls, db: Database, session_id: str) -> None:
        await db.run_batch(
            [
                ("DEL", cls._deleting_key(db.keys, session_id)),
                ("SREM", cls._collection_key(db.keys, "deletions"), session_id),
            ],
            atomic=True,
        )

    @classmethod
    async def interrupted_deletions(cls, *, db: Database | None = None) -> list[str]:
        """Return the sessions whose deletion started and did not finish (e.g. a crash).

        Example:
            ```python
            for session_id in await Submission.interrupted_deletions():
                await Submission.delete_session(session_id)
            ```
        """
        database = pick_database(db)
        members = await database.client.smembers(cls._collection_key(database.keys, "deletions"))
        return sorted(reply_text(m) for m in members)
