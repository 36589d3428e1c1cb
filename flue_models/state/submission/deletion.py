"""Deleting a session's submissions, keeping the receipts replays are answered with.

Example:
    ```python
    removed = await Submission.delete_session("s-1")
    ```
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence

from flue_models.connection import Database, pick_database
from flue_models.errors import SessionBusyError, SessionDeletingError
from flue_models.model.writes import retry_on_conflict
from flue_models.replies import reply_text
from flue_models.state.submission.row import SubmissionRow

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
    async def delete_session(
        cls,
        session_id: str,
        *,
        delete_snapshot: Callable[[str], Awaitable[None]] | None = None,
        db: Database | None = None,
    ) -> int:
        """Delete a session's settled submissions and journals, keeping dispatch receipts.

        ``delete_snapshot(session_id)``, when given, deletes what the application keeps
        of the session elsewhere (its snapshot). It is called by the deleter holding the
        marker, after the busy check and before any row is removed, so of two racing
        deleters only one calls it. If it raises, the marker is removed (admissions are
        accepted again, nothing is listed as interrupted), nothing was deleted, and the
        error is raised again.

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
        own = database.keys.session_submissions(session_id)
        token = uuid.uuid4().hex

        async def marker(op: str) -> bool:
            keys, args = [own.deleting, own.deletions], [op, token, session_id, DELETION_LEASE_MS]
            return bool(await database.scripts.call("session_deletion", keys=keys, args=args))

        if not await marker("take"):
            raise SessionDeletingError(session_id)
        ended = True  # refused (busy, the snapshot's own error) or finished: unlisted
        try:
            open_count = await cls._open_count(database, session_id)
            if open_count:
                raise SessionBusyError(session_id, open_count)
            if delete_snapshot is not None:
                await delete_snapshot(session_id)
            ended = False  # cut short from here on: listed as interrupted
            removed = await cls._remove_settled(database, session_id, own.deleting, token)
            ended = True
        finally:
            await marker("end" if ended else "release")
        return removed

    @classmethod
    async def _open_count(cls, db: Database, session_id: str) -> int:
        """How many of the session's submissions are queued or running, by their rows."""
        by_session = db.keys.session_submissions(session_id).open
        ids = [reply_text(i) for i in await db.client.zrange(by_session, 0, -1)]
        rows, _now = await cls._read_many(db, ids, [session_id] * len(ids))
        return sum(1 for r in rows if r is not None and r._open_in(session_id))

    @classmethod
    async def _remove_settled(cls, db: Database, session_id: str, marker: str, token: str) -> int:
        by_session = db.keys.session_submissions(session_id).submissions
        query = cls.find(cls.session_id == session_id).using(db)

        removed, cursor = 0, None
        while True:
            renewed = await db.scripts.call(
                "lock_renew", keys=[marker], args=[token, DELETION_LEASE_MS]
            )
            if not renewed:
                raise SessionDeletingError(session_id)  # the lease ran out: stop at once
            page = await query.id_page(limit=200, cursor=cursor)
            for submission_id in page.ids:
                removed += await cls.remove_settled(
                    submission_id, session_id=session_id, orphan_of=[by_session], db=db
                )
            if page.next_cursor is None:
                return removed
            cursor = page.next_cursor

    @classmethod
    async def remove_settled(
        cls,
        submission_id: str,
        *,
        session_id: str | None = None,
        settled_before: dt.datetime | None = None,
        orphan_of: Sequence[str] = (),
        db: Database | None = None,
    ) -> bool:
        """Remove a settled submission (settled before ``settled_before``, if given) with
        its journal, under its version check; a dispatch leaves its receipt first (a
        replay is still answered). Returns whether this call removed the row; a queued or
        running one is never removed. Safe to retry.

        ``session_id``: the row's session, when known (its bucket alone is read).
        ``orphan_of``: sorted sets the id is taken out of when no row is found (an index
        entry without a row: the row is the truth).

        Example:
            ```python
            await Submission.remove_settled("d-1", settled_before=cutoff)
            ```
        """
        db = pick_database(db)

        async def remove() -> bool:
            row, now = await cls._read(db, submission_id, session_id)
            if row is None:  # an entry without a row (or a quarantined row)
                if orphan_of:
                    await db.run_batch([("ZREM", key, submission_id) for key in orphan_of])
                return False
            if row.status != "settled":
                return False  # queued or running: never removed here
            if settled_before is not None and (
                row.settled_at is None or row.settled_at >= settled_before
            ):
                return False
            if row.kind == "dispatch":
                await row._keep_receipt(db, now)
            return await row.delete(db=db)  # under the version check

        return await retry_on_conflict(remove)

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
        keys = database.keys.every_submission_bucket("deletions")
        found = await database.run_batch([("SMEMBERS", key) for key in keys])
        return sorted({reply_text(m) for members in found for m in members})
