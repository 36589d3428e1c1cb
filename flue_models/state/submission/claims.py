"""Claims and leases: one worker per session head, fenced steps, settling.

States: ``queued`` -> ``running`` (claim) -> ``settled`` (finish / fail), with
``running`` -> ``queued`` (requeue) and ``queued`` -> ``settled`` (settle_queued). Only a
session's head (its oldest unsettled submission) can be claimed. Every transition is a
compare-and-set: read the row and the server clock, check the transition, write under the
version check, and decide again if another writer got there first. An attempt's own
steps start from the row this process kept for it instead of a read (see
``SubmissionRow._keep``): the version check then says whether the store still holds it.

Example:
    ```python
    attempt = await Submission.claim("sub-1", owner_id="worker-a")
    await Submission.finish(attempt)
    ```
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Self

from flue_models.connection import Database, pick_database
from flue_models.model.codec import EPOCH
from flue_models.model.query import Query
from flue_models.model.writes import retry_on_conflict
from flue_models.replies import reply_pairs, reply_scored
from flue_models.state.submission.row import (
    DEFAULT_LEASE,
    DEFAULT_TIMEOUT,
    Attempt,
    Outcome,
    SubmissionRow,
)

#: How many entries of a session's ``open_session`` index a head check reads at a time.
HEAD_WINDOW = 4


class Claiming(SubmissionRow):
    """The claims-and-leases part of :class:`~flue_models.state.submission.Submission`.

    Example:
        ```python
        for row in await Submission.list_runnable():
            attempt = await Submission.claim(row.id, owner_id="worker-a")
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def _heads(
        cls,
        db: Database,
        session_ids: list[str],
        known: dict[str, Self] | None = None,
        first: dict[str, Any] | None = None,
    ) -> dict[str, Self | None]:
        """Each session's head: its unsettled submission with the lowest sequence.

        The ``open_session`` index proposes the order and the rows decide: an entry whose
        row is missing, settled or of another session (a stale entry) is passed over, and
        the head is the open row with the lowest ``sequence`` (its own, not its entry's
        score). An entry scored otherwise than its row's sequence (a stale score) makes
        the whole index of that session be read, so it cannot put a later submission
        first. ``known`` rows were read by the caller and are not read again; ``first``
        holds sessions' first windows (:meth:`_head_window`'s replies) the caller read.
        """
        rows: dict[str, Self] = dict(known or {})
        heads: dict[str, Self | None] = {}
        pending, start, window = sorted(set(session_ids)), 0, HEAD_WINDOW
        whole: set[str] = set()  # sessions whose index showed a stale score: read it all
        windows = dict(first or {})  # replies read, not yet used
        while pending:
            stop = start + window - 1
            asked = [s for s in pending if s not in windows]
            commands = [
                cls._head_window(db, s, *((0, -1) if s in whole else (start, stop))) for s in asked
            ]
            windows.update(
                zip(asked, await db.run_batch(commands) if commands else [], strict=True)
            )
            replies = [windows.pop(s) for s in pending]
            scored = {s: reply_scored(r) for s, r in zip(pending, replies, strict=True)}
            proposed = {s: [i for i, _score in entries] for s, entries in scored.items()}
            session_of = {i: s for s, ids in proposed.items() for i in ids if i not in rows}
            unread = sorted(session_of)
            if unread:
                sessions = [session_of[i] for i in unread]
                read, _now = await cls._read_many(db, unread, sessions)
                rows.update({row.id: row for row in read if row is not None})
            pending = []
            for session_id, entries in scored.items():
                ids = proposed[session_id]
                open_rows = [rows[i] for i in ids if i in rows and rows[i]._open_in(session_id)]
                stale = any(
                    rows[i].sequence != score
                    for i, score in entries
                    if i in rows and rows[i]._open_in(session_id)
                )
                if stale and session_id not in whole:
                    whole.add(session_id)  # a stale score: this window's order is not sure
                    pending.append(session_id)
                elif open_rows or len(ids) < window or session_id in whole:
                    heads[session_id] = min(open_rows, key=lambda r: r.sequence, default=None)
                else:
                    pending.append(session_id)  # only stale entries so far: look further
            start += window
        return heads

    @staticmethod
    def _head_window(
        db: Database, session_id: str, start: int = 0, stop: int = HEAD_WINDOW - 1
    ) -> tuple[Any, ...]:
        """The command that reads entries ``start`` to ``stop`` of a session's
        ``open_session`` index with their scores; by default the first window, what
        :meth:`_heads` reads first, for a caller to send with its own reads."""
        open_index = db.keys.session_submissions(session_id).open
        return ("ZRANGE", open_index, start, stop, "WITHSCORES")

    @classmethod
    async def list_runnable(cls, limit: int = 100, *, db: Database | None = None) -> list[Self]:
        """Return at most one submission per session: its head, if queued, in admission order.

        Listings trust only the rows: a stale index entry (a crash of an older version, a
        hand edit) never lists a row that is not queued or not its session's head. Three
        round trips per page of candidates: their ids, the rows, and each session's head.

        Example:
            ```python
            for row in await Submission.list_runnable():
                attempt = await Submission.claim(row.id, owner_id="worker-a")
            ```
        """
        database = pick_database(db)
        runnable: list[Self] = []
        query = cls.find(cls.status == "queued").using(database)
        pages = cls._listed_pages(database, query, max(limit, 50))
        async with contextlib.aclosing(pages):  # closed at once when the page is full
            async for found in pages:
                rows = [row for row in found if row.status == "queued"]
                heads = await cls._heads(
                    database, [r.session_id for r in rows], {r.id: r for r in rows}
                )
                seen = {r.session_id for r in runnable}
                for row in rows:
                    head = heads.get(row.session_id)
                    if head is not None and head.id == row.id and row.session_id not in seen:
                        runnable.append(row)
                        seen.add(row.session_id)
                if len(runnable) >= limit:
                    break
        return runnable[:limit]

    @classmethod
    async def has_unsettled(cls, session_id: str, *, db: Database | None = None) -> bool:
        """Return whether any submission of the session is queued or running (by its row).

        Example:
            ```python
            if not await Submission.has_unsettled("s-1"):
                await Submission.delete_session("s-1")
            ```
        """
        database = pick_database(db)
        return (await cls._heads(database, [session_id]))[session_id] is not None

    @classmethod
    async def list_running(cls, *, db: Database | None = None) -> list[Self]:
        """Return every running submission, in admission order (checked against its row).

        Example:
            ```python
            mine = [row for row in await Submission.list_running() if row.owner_id == me]
            ```
        """
        database = pick_database(db)
        query = cls.find(cls.status == "running").using(database)
        return [row for row in await cls._rows_listed(database, query) if row.status == "running"]

    @classmethod
    async def claim(
        cls,
        submission_id: str,
        owner_id: str,
        *,
        lease: dt.timedelta = DEFAULT_LEASE,
        session_id: str | None = None,
        db: Database | None = None,
    ) -> Attempt | None:
        """Move a queued session head to running for ``owner_id``: a compare-and-set.

        Sets a new attempt id, the lease (from the server clock; a non-positive lease is
        expired at once), ``attempt_count + 1`` and, on the first claim, ``timeout_at``.
        Returns ``None`` when the submission is not a queued head (or another claimer
        won). A submission out of attempts is settled as failed instead.

        ``session_id``: the submission's session, when the caller knows it (a row
        :meth:`list_runnable` returned carries it). Its bucket alone is read, and the
        session's head is read in the same round trip: two round trips, not three, and
        one row read, not one per bucket. A submission of another session is not found
        (``None``).

        Safe to retry: a claim retried by the owner that holds the submission (its first
        call's reply was lost) returns that owner's current attempt.

        Example:
            ```python
            attempt = await Submission.claim("sub-1", "worker-a", lease=timedelta(seconds=60))
            for row in await Submission.list_runnable():
                attempt = await Submission.claim(row.id, "worker-a", session_id=row.session_id)
            ```
        """
        database = pick_database(db)
        spec = cls.__flue_spec__

        async def attempt() -> Attempt | None:
            first: dict[str, Any] = {}
            if session_id is None:
                row, now = await cls._read(database, submission_id)
            else:  # its bucket, and its session's first window: one round trip
                home = [[spec.record_key(database.keys, submission_id, session_id)]]
                window = cls._head_window(database, session_id)
                (row,), now, (first[session_id],) = await cls._read_candidates(
                    database, [submission_id], home, [window]
                )
                if row is not None and row.session_id != session_id:
                    row = None  # in the bucket the session hashes to, but of another one
            if (
                row is not None
                and row.status == "running"
                and row.owner_id == owner_id
                and row.attempt_id
                and row.lease_expires_at
            ):  # a retry after a lost reply: this owner holds it; say so
                return Attempt(
                    row.id, row.attempt_id, owner_id, row.lease_expires_at, row.session_id
                )
            if row is None or row.status != "queued":
                return None
            known = {row.id: row}
            head = (await cls._heads(database, [row.session_id], known, first))[row.session_id]
            if head is None or head.id != row.id:
                return None
            if row.attempt_count >= row.max_attempts:
                row._settle(now, "failed", f"gave up after {row.attempt_count} attempts")
                await row._write(database)
                return None
            attempt_id = uuid.uuid4().hex
            row.status = "running"
            row.attempt_id = attempt_id
            row.owner_id = owner_id
            row.lease_expires_at = now + lease
            row.attempt_count += 1
            row.timeout_at = row.timeout_at or now + DEFAULT_TIMEOUT
            await row._write(database)
            row._keep()  # the attempt's later steps plan from it
            return Attempt(row.id, attempt_id, owner_id, row.lease_expires_at, row.session_id)

        return await retry_on_conflict(attempt)

    @classmethod
    async def _fenced(
        cls,
        db: Database | None,
        token: Attempt,
        change: Callable[[Self, dt.datetime], bool],
        done: Callable[[Self], bool] | None = None,
        *,
        kept: bool = False,
        clock: str | None = None,
    ) -> bool:
        """Apply ``change(row, now)`` to the running row of the attempt ``token``, as a
        compare-and-set.

        ``done(row)`` says whether the row already shows this change by this attempt (a
        retry after a lost reply): then the call reports success without writing.

        ``kept``: the first try may plan from the row this process kept for the attempt
        (:meth:`_kept`), without reading it: one round trip. The write's version check
        refuses it if the row changed since, and the next try reads. Only a change that
        writes ``now`` (into the field ``clock``, which then takes the server's time as
        the script writes) and decides nothing by it may do so; and only a change the
        kept row takes is written from it (a refusal is always decided on a read).
        """
        database = pick_database(db)
        attempt_id = token.attempt_id
        tries = 0

        async def attempt() -> bool:
            nonlocal tries
            tries += 1
            row = cls._kept(database, attempt_id) if kept and tries == 1 else None
            if row is not None and change(row, EPOCH):  # now: the script's time, if used
                await row._write(database, clock=clock)
            else:
                row, now = await cls._read(database, token.submission_id, token.session_id)
                if row is not None and row.attempt_id == attempt_id and done and done(row):
                    return True
                if row is None or row.status != "running" or row.attempt_id != attempt_id:
                    return False
                if not change(row, now):
                    return False
                await row._write(database)
            row._keep()
            return True

        return await retry_on_conflict(attempt)

    @classmethod
    async def mark_input_applied(cls, attempt: Attempt, *, db: Database | None = None) -> bool:
        """Record that the attempt applied the submission's input (once); stale attempts
        get False.

        Example:
            ```python
            if await Submission.mark_input_applied(attempt):
                ...
            ```
        """

        def change(row: Self, now: dt.datetime) -> bool:
            if row.input_applied_at is not None:
                return False
            row.input_applied_at = now
            return True

        return await cls._fenced(db, attempt, change, kept=True, clock="input_applied_at")

    @classmethod
    async def requeue(cls, attempt: Attempt, *, db: Database | None = None) -> bool:
        """Give a running submission back to the queue before its input was applied.

        Clears the attempt, owner, lease and ``input_applied_at``; the journal slot stays
        (the next attempt begins its own turn). Refused (False, nothing written) once the
        input was applied (the work must be recovered, not redone), and for a stale
        attempt. Not idempotent: a retry after a lost reply finds the attempt gone and
        returns False; read the row to tell.

        Example:
            ```python
            await Submission.requeue(attempt)   # e.g. on a graceful shutdown
            ```
        """

        def change(row: Self, now: dt.datetime) -> bool:
            return row.owner_id == attempt.owner_id and row._requeued()

        return await cls._fenced(db, attempt, change, kept=True)

    def _requeued(self) -> bool:
        """Give this running row back to the queue (on the copy), unless its input was
        applied; return whether it changed."""
        if self.input_applied_at is not None:
            return False
        self.status = "queued"
        self.attempt_id = self.owner_id = self.lease_expires_at = None
        return True

    @classmethod
    async def renew_leases(
        cls,
        owner_id: str,
        submission_ids: list[str],
        *,
        lease: dt.timedelta = DEFAULT_LEASE,
        db: Database | None = None,
    ) -> list[str]:
        """Extend the leases of the running submissions this owner holds; return those
        renewed.

        Example:
            ```python
            renewed = await Submission.renew_leases("worker-a", ["sub-1", "sub-2"])
            ```
        """
        database = pick_database(db)

        def renewer(submission_id: str) -> Callable[[], Awaitable[bool]]:
            async def attempt() -> bool:
                row, now = await cls._read(database, submission_id)
                if row is None or row.status != "running" or row.owner_id != owner_id:
                    return False
                row.lease_expires_at = now + lease
                await row._write(database)
                row._keep()  # the attempt's next step plans from the renewed row
                return True

            return attempt

        return [s for s in submission_ids if await retry_on_conflict(renewer(s))]

    @classmethod
    async def list_expired(cls, *, db: Database | None = None) -> list[Self]:
        """Return the running submissions whose lease has expired (by the server clock).

        Each is checked against its row, not only its index entries.

        Example:
            ```python
            for row in await Submission.list_expired():
                await Submission.replace_attempt(row.id, row.attempt_id, "worker-b")
            ```
        """
        database = pick_database(db)
        now = await database.server_time()
        lease: Any = cls.lease_expires_at  # a FieldRef on the class; typed as the value
        query = cls.find(cls.status == "running", lease < now).sort_by("lease_expires_at")
        rows = await cls._rows_listed(database, query.using(database))
        return [row for row in rows if row.lease_expired(now)]

    @classmethod
    async def _rows_listed(cls, database: Database, query: Query[Self]) -> list[Self]:
        """Every row ``query`` lists (see :meth:`_listed_pages`)."""
        return [row async for page in cls._listed_pages(database, query) for row in page]

    @classmethod
    async def _listed_pages(
        cls, database: Database, query: Query[Self], size: int = 500
    ) -> AsyncGenerator[list[Self], None]:
        """The rows ``query`` lists, a page at a time, read as a claim reads rows: a
        malformed one is quarantined (settled as failed) instead of failing the listing;
        a row gone meanwhile is left out."""
        cursor = None
        while True:
            page = await query.id_page(limit=size, cursor=cursor)
            found, _now = await cls._read_keys_of(database, page.ids, page.record_keys)
            yield [row for row in found if row is not None]
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @classmethod
    async def requeue_expired(cls, submission_id: str, *, db: Database | None = None) -> bool:
        """Give a submission whose lease has expired back to the queue, by an operator.

        The expired attempt is requeued as its owner would (:meth:`requeue`): refused
        (False, nothing written) once its input was applied (recover it with
        :meth:`replace_attempt` instead), when the lease has not expired by the server
        clock, or when the row is no longer running.

        Example:
            ```python
            for row in await Submission.list_expired():
                await Submission.requeue_expired(row.id)
            ```
        """
        database = pick_database(db)
        row = await cls.get(submission_id, db=database)
        if row is None or row.status != "running" or row.attempt_id is None:
            return False
        if row.owner_id is None or row.lease_expires_at is None:
            return False
        expired = Attempt(
            row.id, row.attempt_id, row.owner_id, row.lease_expires_at, row.session_id
        )

        def change(row: Self, now: dt.datetime) -> bool:
            # Checked on the row the write is version-checked against, with the server
            # time read with it: a lease renewed since the first read is not taken.
            lease = row.lease_expires_at
            return (
                row.owner_id is not None and lease is not None and lease < now and row._requeued()
            )

        return await cls._fenced(database, expired, change)

    @classmethod
    async def replace_attempt(
        cls,
        submission_id: str,
        old_attempt_id: str | None,
        new_owner_id: str,
        *,
        lease: dt.timedelta = DEFAULT_LEASE,
        db: Database | None = None,
    ) -> Attempt | None:
        """Hand a running submission's attempt over to a new owner (recovery).

        A new attempt id, a new lease, ``attempt_count + 1``; ``input_applied_at`` stays,
        so the recovering attempt knows the input was applied; an uncommitted journal
        slot moves to the new attempt (in the same atomic write), so it goes on with the
        turn. Only while ``old_attempt_id`` is the current attempt of a running row;
        else ``None``. Not idempotent: a retry after a lost reply finds the old attempt
        replaced and returns ``None``; read the row to tell.

        Example:
            ```python
            attempt = await Submission.replace_attempt(row.id, row.attempt_id, "worker-b")
            ```
        """
        if old_attempt_id is None:
            return None
        database = pick_database(db)

        async def attempt() -> Attempt | None:
            row, now = await cls._read(database, submission_id)
            if row is None or row.status != "running" or row.attempt_id != old_attempt_id:
                return None
            journal_key = database.keys.journal(submission_id, row.session_id)
            # Read after the row: a journal step in between gives the row a new version,
            # so the write below is refused and this runs again.
            slot = reply_pairs(await database.client.hgetall(journal_key))
            row.attempt_id = uuid.uuid4().hex
            row.owner_id = new_owner_id
            row.lease_expires_at = now + lease
            row.attempt_count += 1
            hashes = {}
            if slot.get("attempt") == old_attempt_id and "committed" not in slot:
                slot["attempt"] = row.attempt_id
                hashes[journal_key] = {k: v.encode() for k, v in slot.items()}
            await row._write(database, hashes=hashes)
            cls._kept(database, old_attempt_id)  # the old attempt's row: let go
            row._keep()
            return Attempt(
                submission_id, row.attempt_id, new_owner_id, row.lease_expires_at, row.session_id
            )

        return await retry_on_conflict(attempt)

    # Settling --------------------------------------------------------------------------

    @classmethod
    async def _end(
        cls, attempt: Attempt, outcome: Outcome, error: Any, db: Database | None
    ) -> bool:
        def change(row: Self, now: dt.datetime) -> bool:
            row._settle(now, outcome, error)
            return True

        def done(row: Self) -> bool:
            return row.status == "settled" and (row.outcome, row.error) == (outcome, error)

        return await cls._fenced(db, attempt, change, done, kept=True, clock="settled_at")

    @classmethod
    async def finish(cls, attempt: Attempt, *, db: Database | None = None) -> bool:
        """Settle the attempt's submission as completed; the first terminal state wins.

        A stale attempt (replaced, requeued, settled otherwise) changes nothing and gets
        False. Safe to retry: a retry of this attempt after a lost reply finds the row
        settled as it asked and returns True.

        Example:
            ```python
            await Submission.finish(attempt)
            ```
        """
        return await cls._end(attempt, "completed", None, db)

    @classmethod
    async def fail(cls, attempt: Attempt, error: Any, *, db: Database | None = None) -> bool:
        """Settle the attempt's submission as failed with ``error``; the first terminal
        state wins.

        Example:
            ```python
            await Submission.fail(attempt, error={"message": "tool crashed"})
            ```
        """
        return await cls._end(attempt, "failed", error, db)

    @classmethod
    async def settle_queued(
        cls, submission_id: str, outcome: Outcome, error: Any = None, *, db: Database | None = None
    ) -> bool:
        """Settle a submission that is still queued (e.g. aborted before any claim).

        Racing a claim, exactly one of the two wins.

        Example:
            ```python
            await Submission.settle_queued("sub-1", "aborted", error="user cancelled")
            ```
        """
        database = pick_database(db)

        async def attempt() -> bool:
            row, now = await cls._read(database, submission_id)
            if row is None or row.status != "queued":
                return False
            row._settle(now, outcome, error)
            await row._write(database)
            return True

        return await retry_on_conflict(attempt)
