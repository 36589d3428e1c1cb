"""Deleting a session's submissions, keeping the receipts replays are answered with.

Example:
    ```python
    removed = await Submission.delete_session("s-1")
    ```
"""

from __future__ import annotations

import functools
import json
import uuid

from flue_models.connection import Database, pick_database
from flue_models.model.writes import retry_on_conflict
from flue_models.replies import reply_text
from flue_models.state.submission.row import (
    SessionBusyError,
    SessionDeletingError,
    SubmissionRow,
    digest,
)

#: The lease of a session's deletion marker; a running deletion renews it every page,
#: and a crashed one blocks admissions into the session for at most this long.
DELETION_LEASE_MS = 60_000


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

        One deletion runs per session at a time: it holds the session's deletion marker
        (a token with a lease, renewed as it goes, removed only by its holder), and
        admissions into the session are refused while the marker exists. It removes only
        settled rows: a row that is queued or running is left as it is. Refused while
        anything is queued or running when it starts. An interrupted deletion is listed
        by :meth:`interrupted_deletions` and finished by calling this again (at once, or
        once its lease of ``DELETION_LEASE_MS`` has run out). Returns the number of
        submissions removed.

        Safe to retry: a retry removes what is left and returns how many it removed.

        Raises:
            SessionBusyError: a submission of the session is queued or running.
            SessionDeletingError: another deletion of this session is running.

        Example:
            ```python
            removed = await Submission.delete_session("s-1")
            ```
        """
        database = pick_database(db)
        keys = database.keys
        marker = cls._deleting_key(keys, session_id)
        token = uuid.uuid4().hex
        await cls._take_marker(database, session_id, marker, token)
        try:
            open_count = int(
                await database.client.zcard(cls._index_key(keys, "open_session", session_id))
            )
            if open_count:
                raise SessionBusyError(session_id, open_count)
            removed = await cls._remove_settled(database, session_id, marker, token)
        finally:
            await database.scripts.call("lock_release", keys=[marker], args=[token])
        await database.client.srem(cls._collection_key(keys, "deletions"), session_id)
        return removed

    @classmethod
    async def _take_marker(cls, db: Database, session_id: str, marker: str, token: str) -> None:
        """Hold the session's deletion marker, or refuse: another deletion holds it."""
        deletions = cls._collection_key(db.keys, "deletions")
        taken, _added = await db.run_batch(
            [
                ("SET", marker, token, "NX", "PX", DELETION_LEASE_MS),
                ("SADD", deletions, session_id),
            ],
            atomic=True,
        )
        if taken:
            return
        if int(await db.client.pttl(marker)) == -1:  # left by a version without leases
            await db.client.set(marker, token, px=DELETION_LEASE_MS)
            return
        raise SessionDeletingError(session_id)

    @classmethod
    async def _remove_settled(cls, db: Database, session_id: str, marker: str, token: str) -> int:
        receipts = cls._collection_key(db.keys, "receipts")
        by_session = cls._index_key(db.keys, "session_id", session_id)
        query = cls.find(cls.session_id == session_id).using(db)

        async def remove(submission_id: str) -> bool:
            row, _now = await cls._read(db, submission_id)
            if row is None:  # an entry without a row (or a quarantined row)
                await db.client.zrem(by_session, submission_id)
                return False
            if row.status != "settled":
                return False  # queued or running: never deleted here
            if row.kind == "dispatch":
                receipt = {
                    "id": row.id,
                    "session_id": row.session_id,
                    "digest": digest(row.session_id, row.kind, row.input),
                    "accepted_at": row.accepted_at.isoformat(timespec="microseconds"),
                    "sequence": row.sequence,
                    "outcome": row.outcome,
                }
                await db.client.hset(receipts, row.id, json.dumps(receipt))
            return await row.delete(db=db)  # under the version check

        removed, cursor = 0, None
        while True:
            renewed = await db.scripts.call(
                "lock_renew", keys=[marker], args=[token, DELETION_LEASE_MS]
            )
            if not renewed:
                raise SessionDeletingError(session_id)  # the lease ran out: stop at once
            page = await query.id_page(limit=200, cursor=cursor)
            for submission_id in page.ids:
                removed += await retry_on_conflict(functools.partial(remove, submission_id))
            if page.next_cursor is None:
                return removed
            cursor = page.next_cursor

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
