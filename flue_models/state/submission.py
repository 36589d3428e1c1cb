"""Submissions: accepted prompts and dispatches, their claims, leases and recovery journal.

Every state change is one compare-and-set on the server: the submission is read, the
transition is checked against what was read, and the write is the ``save`` script's
version-checked call, so of any number of racing writers exactly one wins and the others
see the new state and decide again. Times (leases, settling) come from the server clock.

States: ``queued`` -> ``running`` (claim) -> ``settled`` (complete / fail), with
``running`` -> ``queued`` (requeue) and ``queued`` -> ``settled`` (settle_queued). Only a
session's head (its oldest unsettled submission) can be claimed.

Example:
    ```python
    result = await admit_dispatch("sub-1", session_id="s-1", input={"prompt": "hi"})
    attempt = await claim("sub-1", owner_id="worker-a")
    await journal_begin(attempt)
    await complete(attempt)
    ```
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from flue_models.connection import Database, current_database
from flue_models.errors import FlueModelsError
from flue_models.keys import KeySpace
from flue_models.model.base import Model, _run_writes, _Write
from flue_models.model.codec import canonical_json
from flue_models.model.errors import ConflictError, DecodeError, GuardError
from flue_models.model.fields import Indexed
from flue_models.replies import reply_hash, reply_time

Kind = Literal["dispatch", "direct"]
Status = Literal["queued", "running", "settled"]
Outcome = Literal["completed", "failed", "aborted"]
Phase = Literal["before_provider", "provider_started", "tool_request_recorded", "committed"]

#: Default lease of a claim.
DEFAULT_LEASE = dt.timedelta(seconds=30)
#: A submission times out this long after its first claim unless told otherwise.
DEFAULT_TIMEOUT = dt.timedelta(hours=1)


class SubmissionError(FlueModelsError):
    """Base class of submission errors.

    Example:
        >>> issubclass(AdmissionConflictError, SubmissionError)
        True
    """


class AdmissionConflictError(SubmissionError):
    """A direct admission reused an id with another payload, session or kind.

    Example:
        >>> "sub-1" in str(AdmissionConflictError("sub-1"))
        True
    """

    def __init__(self, submission_id: str) -> None:
        self.submission_id = submission_id
        super().__init__(
            f"Submission {submission_id!r} was already admitted with another payload, "
            "session or kind; nothing was admitted. Use a new id for a new submission."
        )


class SessionDeletingError(SubmissionError):
    """Admission into (or deletion of) a session whose deletion is in progress.

    Example:
        >>> "s-1" in str(SessionDeletingError("s-1"))
        True
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"Session {session_id!r} is being deleted; nothing is admitted into it. Resume "
            "the deletion with delete_session() if it was interrupted."
        )


class SessionBusyError(SubmissionError):
    """A session cannot be deleted while any of its submissions is queued or running.

    Example:
        >>> "2" in str(SessionBusyError("s-1", 2))
        True
    """

    def __init__(self, session_id: str, open_count: int) -> None:
        self.session_id = session_id
        super().__init__(
            f"Session {session_id!r} has {open_count} queued or running submission(s); settle "
            "them before deleting the session. Nothing was deleted."
        )


class Submission(Model):
    """One accepted prompt (``direct``) or dispatch, and the state of its processing.

    ``open_session`` holds the session id while the submission is unsettled: its index,
    ordered by ``sequence``, gives each session's head.

    Example:
        ```python
        row = await Submission.get("sub-1")   # one round trip
        row.status, row.attempt_count
        ```
    """

    class Meta:
        collection = "submission"
        order_by = "sequence"

    id: str
    session_id: Annotated[str, Indexed()]
    kind: Kind
    input: Any = None
    status: Annotated[Status, Indexed()] = "queued"
    sequence: int
    accepted_at: dt.datetime
    attempt_id: str | None = None
    owner_id: Annotated[str | None, Indexed()] = None
    lease_expires_at: Annotated[dt.datetime | None, Indexed(range=True)] = None
    attempt_count: int = 0
    max_attempts: int = 10
    timeout_at: dt.datetime | None = None
    input_applied_at: dt.datetime | None = None
    settled_at: dt.datetime | None = None
    outcome: Outcome | None = None
    error: Any = None
    open_session: Annotated[str | None, Indexed()] = None

    def _plan_delete(self, keys: KeySpace) -> _Write:
        write = super()._plan_delete(keys)
        write.lists[journal_key(keys, self.id)] = []  # the journal goes with the row
        return write


@dataclass(frozen=True)
class Admission:
    """What admitting returns.

    Attributes:
        submission: the stored row (``None`` when only a receipt of a deleted session's
            submission remains; see ``receipt``).
        created: this call admitted it (``False``: an exact replay).
        conflict: the id was admitted before with another payload, session or kind.
        receipt: the retained receipt of a submission whose session was deleted.

    Example:
        ```python
        result = await admit_dispatch("d-1", session_id="s-1", input={})
        if result.conflict:
            ...
        ```
    """

    submission: Submission | None
    created: bool
    conflict: bool = False
    receipt: dict[str, Any] | None = None


@dataclass(frozen=True)
class Attempt:
    """A claim: the fencing token every later step of the attempt presents.

    Example:
        ```python
        attempt = await claim("sub-1", owner_id="worker-a")
        await complete(attempt)
        ```
    """

    submission_id: str
    attempt_id: str
    owner_id: str
    lease_expires_at: dt.datetime


def journal_key(keys: KeySpace, submission_id: str) -> str:
    """Return the recovery journal hash of a submission.

    Example:
        >>> journal_key(KeySpace("p"), "s")
        'p:submission/journal:cw'
    """
    return keys.owned("submission", "journal", submission_id)


def _deleting_key(keys: KeySpace, session_id: str) -> str:
    return keys.owned("submission", "deleting", session_id)


def _receipts_key(keys: KeySpace) -> str:
    return keys.collection_key("submission", "receipts")


def _deletions_key(keys: KeySpace) -> str:
    return keys.collection_key("submission", "deletions")


def _digest(session_id: str, kind: str, input: Any) -> str:
    return canonical_json({"session_id": session_id, "kind": kind, "input": input})


async def _read_many(
    db: Database, submission_ids: list[str]
) -> tuple[list[Submission | None], dt.datetime]:
    """Read submissions and the server clock in one round trip; quarantine malformed rows."""
    keys = [db.keys.record("submission", submission_id) for submission_id in submission_ids]
    *raws, time = await db.run_batch([*(("HGETALL", k) for k in keys), ("TIME",)])
    now = reply_time(time)
    rows: list[Submission | None] = []
    for key, submission_id, raw in zip(keys, submission_ids, raws, strict=True):
        row = None
        if raw:
            try:
                row = Submission._from_hash(key, reply_hash(raw), db)
            except DecodeError as exc:
                await _quarantine(db, key, submission_id, reply_hash(raw), exc)
        rows.append(row)
    return rows, now


async def _read(db: Database, submission_id: str) -> tuple[Submission | None, dt.datetime]:
    """Read a submission and the server clock in one round trip."""
    (row,), now = await _read_many(db, [submission_id])
    return row, now


async def _quarantine(
    db: Database, key: str, submission_id: str, raw: dict[bytes, bytes], exc: DecodeError
) -> None:
    """Settle an undecodable row as failed ("malformed") and take it out of every index.

    Its index keys are derived from the raw bytes of the indexed fields, which is what
    the codec of a ``str`` field stores.
    """
    spec = Submission.__flue_spec__
    sets = [db.keys.all(spec.collection), spec.range_key(db.keys, "lease_expires_at")]
    for field_name in spec.equality_fields:
        value = raw.get(field_name.encode())
        if value is not None:
            sets.append(db.keys.index(spec.collection, field_name, value))
    error = json.dumps(f"malformed submission row: {exc}")
    await db.run_batch(
        [
            *[("ZREM", s, submission_id) for s in sets],
            ("HSET", key, "status", "settled", "outcome", "failed", "error", error),
            ("HDEL", key, "open_session", "owner_id", "lease_expires_at"),
        ],
        atomic=True,
    )


async def _save(db: Database, row: Submission, guard: list[str] | None = None) -> bool:
    """Write ``row`` under its version check; ``False`` when another writer got there first."""
    write = row._plan_save(db.keys)
    write.absent = guard or []
    try:
        await _run_writes(db, [write])
    except ConflictError:
        return False
    return True


# Admission ---------------------------------------------------------------------------


async def _admit(
    kind: Kind, submission_id: str, session_id: str, input: Any, db: Database | None
) -> Admission:
    database = db or current_database()
    while True:
        row, now = await _read(database, submission_id)
        if row is not None:
            same = _digest(row.session_id, row.kind, row.input) == _digest(session_id, kind, input)
            return Admission(row, created=False, conflict=not same)
        receipt_raw = await database.client.hget(_receipts_key(database.keys), submission_id)
        if receipt_raw is not None:
            receipt = json.loads(receipt_raw)
            same = receipt["digest"] == _digest(session_id, kind, input)
            return Admission(None, created=False, conflict=not same, receipt=receipt)
        deleting = _deleting_key(database.keys, session_id)
        if await database.client.exists(deleting):
            raise SessionDeletingError(session_id)
        counter = database.keys.collection_key("submission", "sequence")
        sequence = int(await database.client.incr(counter))
        row = Submission(
            id=submission_id,
            session_id=session_id,
            kind=kind,
            input=input,
            sequence=sequence,
            accepted_at=now,
            open_session=session_id,
        )
        try:
            if await _save(database, row, guard=[deleting]):
                return Admission(row, created=True)
        except GuardError:
            raise SessionDeletingError(session_id) from None
        # Admitted by a racing call meanwhile: read it and compare, as a replay would.


async def admit_dispatch(
    submission_id: str, *, session_id: str, input: Any, db: Database | None = None
) -> Admission:
    """Admit a dispatch, idempotently on its id; a conflict is reported in the result.

    An exact replay returns the same row and takes no new sequence number; the same id
    with another payload, session or kind returns ``conflict=True``. Re-admitting the id
    of a submission whose session was deleted returns its retained receipt.

    Raises:
        SessionDeletingError: the session is being deleted.

    Example:
        ```python
        result = await admit_dispatch("d-1", session_id="s-1", input={"task": "x"})
        ```
    """
    return await _admit("dispatch", submission_id, session_id, input, db)


async def admit_direct(
    submission_id: str, *, session_id: str, input: Any, db: Database | None = None
) -> Submission:
    """Admit a direct prompt, idempotently on its id.

    Raises:
        AdmissionConflictError: the id was admitted with another payload, session or kind.
        SessionDeletingError: the session is being deleted.

    Example:
        ```python
        row = await admit_direct("p-1", session_id="s-1", input={"prompt": "hi"})
        ```
    """
    result = await _admit("direct", submission_id, session_id, input, db)
    if result.conflict or result.submission is None:
        raise AdmissionConflictError(submission_id)
    return result.submission


async def get_submission(submission_id: str, *, db: Database | None = None) -> Submission | None:
    """Return one submission in one round trip (``None`` if absent or quarantined).

    Example:
        ```python
        row = await get_submission("sub-1")
        ```
    """
    return (await _read(db or current_database(), submission_id))[0]


# Claims and leases -------------------------------------------------------------------


async def _heads(db: Database, session_ids: list[str]) -> dict[str, str | None]:
    """Each session's head: its unsettled submission with the lowest sequence."""
    replies = await db.run_batch(
        [("ZRANGE", db.keys.index("submission", "open_session", s.encode()), 0, 0)
         for s in session_ids]
    )  # fmt: skip
    return {
        s: (reply[0].decode() if reply else None)
        for s, reply in zip(session_ids, replies, strict=True)
    }


async def list_runnable(limit: int = 100, *, db: Database | None = None) -> list[Submission]:
    """Return at most one submission per session: its head, if queued, in admission order.

    Three round trips per page of candidates: their ids, the rows, and each session's head.

    Example:
        ```python
        for row in await list_runnable():
            attempt = await claim(row.id, owner_id="worker-a")
        ```
    """
    database = db or current_database()
    runnable: list[Submission] = []
    cursor = None
    query = Submission.find(Submission.status == "queued").using(database)
    while len(runnable) < limit:
        page = await query.id_page(limit=max(limit, 50), cursor=cursor)
        found, _now = await _read_many(database, page.ids)
        rows = [row for row in found if row is not None]
        heads = await _heads(database, sorted({r.session_id for r in rows}))
        seen = {r.session_id for r in runnable}
        for row in rows:
            if heads.get(row.session_id) == row.id and row.session_id not in seen:
                runnable.append(row)
                seen.add(row.session_id)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return runnable[:limit]


async def claim(
    submission_id: str,
    owner_id: str,
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    db: Database | None = None,
) -> Attempt | None:
    """Move a queued session head to running for ``owner_id``: a compare-and-set.

    Sets a new attempt id, the lease (from the server clock; a non-positive lease is
    expired at once), ``attempt_count + 1`` and, on the first claim, ``timeout_at``.
    Returns ``None`` when the submission is not a queued head (or another claimer won).
    A submission out of attempts is settled as failed instead.

    Example:
        ```python
        attempt = await claim("sub-1", owner_id="worker-a", lease=timedelta(seconds=60))
        ```
    """
    database = db or current_database()
    while True:
        row, now = await _read(database, submission_id)
        if row is None or row.status != "queued":
            return None
        heads = await _heads(database, [row.session_id])
        if heads[row.session_id] != row.id:
            return None
        if row.attempt_count >= row.max_attempts:
            gave_up = f"gave up after {row.attempt_count} attempts"
            await _settle(database, row, now, "failed", gave_up)
            return None
        attempt_id = uuid.uuid4().hex
        row.status = "running"
        row.attempt_id = attempt_id
        row.owner_id = owner_id
        row.lease_expires_at = now + lease
        row.attempt_count += 1
        row.timeout_at = row.timeout_at or now + DEFAULT_TIMEOUT
        if await _save(database, row):
            return Attempt(row.id, attempt_id, owner_id, row.lease_expires_at)


async def _fenced(
    db: Database | None,
    submission_id: str,
    attempt_id: str,
    change: Any,
) -> bool:
    """Apply ``change(row, now)`` to a running row of this attempt, as a compare-and-set."""
    database = db or current_database()
    while True:
        row, now = await _read(database, submission_id)
        if row is None or row.status != "running" or row.attempt_id != attempt_id:
            return False
        if change(row, now) is False:
            return False
        if await _save(database, row):
            return True


async def mark_input_applied(attempt: Attempt, *, db: Database | None = None) -> bool:
    """Record that the attempt applied the submission's input (once); stale attempts get False.

    Example:
        ```python
        if await mark_input_applied(attempt):
            ...
        ```
    """

    def change(row: Submission, now: dt.datetime) -> bool:
        if row.input_applied_at is not None:
            return False
        row.input_applied_at = now
        return True

    return await _fenced(db, attempt.submission_id, attempt.attempt_id, change)


async def requeue(attempt: Attempt, *, db: Database | None = None) -> bool:
    """Give a running submission back to the queue (its owner only); clears attempt and lease.

    Example:
        ```python
        await requeue(attempt)   # e.g. on a graceful shutdown
        ```
    """

    def change(row: Submission, now: dt.datetime) -> bool:
        if row.owner_id != attempt.owner_id:
            return False
        row.status = "queued"
        row.attempt_id = row.owner_id = row.lease_expires_at = None
        return True

    return await _fenced(db, attempt.submission_id, attempt.attempt_id, change)


async def renew_leases(
    owner_id: str,
    submission_ids: list[str],
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    db: Database | None = None,
) -> list[str]:
    """Extend the leases of the running submissions this owner holds; return those renewed.

    Example:
        ```python
        renewed = await renew_leases("worker-a", ["sub-1", "sub-2"])
        ```
    """
    database = db or current_database()
    renewed = []
    for submission_id in submission_ids:
        while True:
            row, now = await _read(database, submission_id)
            if row is None or row.status != "running" or row.owner_id != owner_id:
                break
            row.lease_expires_at = now + lease
            if await _save(database, row):
                renewed.append(submission_id)
                break
    return renewed


async def list_expired(*, db: Database | None = None) -> list[Submission]:
    """Return the running submissions whose lease has expired (by the server clock).

    Example:
        ```python
        for row in await list_expired():
            await replace_attempt(row.id, row.attempt_id, new_owner_id="worker-b")
        ```
    """
    database = db or current_database()
    now = await database.server_time()
    lease: Any = Submission.lease_expires_at  # a FieldRef on the class; typed as the value
    query = Submission.find(Submission.status == "running", lease < now).sort_by("lease_expires_at")
    return await query.using(database).all()


async def replace_attempt(
    submission_id: str,
    old_attempt_id: str | None,
    new_owner_id: str,
    *,
    lease: dt.timedelta = DEFAULT_LEASE,
    db: Database | None = None,
) -> Attempt | None:
    """Hand a running submission's attempt over to a new owner (recovery): a new attempt id,
    a new lease, ``attempt_count + 1``. Only while ``old_attempt_id`` is the current one.

    Example:
        ```python
        attempt = await replace_attempt(row.id, row.attempt_id, new_owner_id="worker-b")
        ```
    """
    if old_attempt_id is None:
        return None
    new_attempt = uuid.uuid4().hex
    expires: list[dt.datetime] = []

    def change(row: Submission, now: dt.datetime) -> bool:
        row.attempt_id = new_attempt
        row.owner_id = new_owner_id
        row.lease_expires_at = now + lease
        row.attempt_count += 1
        row.input_applied_at = None
        expires.append(row.lease_expires_at)
        return True

    if not await _fenced(db, submission_id, old_attempt_id, change):
        return None
    return Attempt(submission_id, new_attempt, new_owner_id, expires[-1])


# Settling ----------------------------------------------------------------------------


def _mark_settled(row: Submission, now: dt.datetime, outcome: Outcome, error: Any) -> bool:
    """Turn ``row`` into a settled one (the caller saves it under the version check)."""
    row.status = "settled"
    row.outcome = outcome
    row.error = error
    row.settled_at = now
    row.open_session = row.owner_id = row.lease_expires_at = None
    return True


async def _settle(
    db: Database, row: Submission, now: dt.datetime, outcome: Outcome, error: Any
) -> bool:
    _mark_settled(row, now, outcome, error)
    return await _save(db, row)


async def complete(attempt: Attempt, *, db: Database | None = None) -> bool:
    """Settle the attempt's submission as completed; the first terminal state wins.

    A stale attempt (replaced, requeued, already settled) changes nothing and gets False.

    Example:
        ```python
        await complete(attempt)
        ```
    """
    return await _finish(attempt, "completed", None, db)


async def fail(attempt: Attempt, error: Any, *, db: Database | None = None) -> bool:
    """Settle the attempt's submission as failed with ``error``; the first terminal state wins.

    Example:
        ```python
        await fail(attempt, error={"message": "tool crashed"})
        ```
    """
    return await _finish(attempt, "failed", error, db)


async def _finish(attempt: Attempt, outcome: Outcome, error: Any, db: Database | None) -> bool:
    def change(row: Submission, now: dt.datetime) -> bool:
        return _mark_settled(row, now, outcome, error)

    return await _fenced(db, attempt.submission_id, attempt.attempt_id, change)


async def settle_queued(
    submission_id: str, outcome: Outcome, error: Any = None, *, db: Database | None = None
) -> bool:
    """Settle a submission that is still queued (e.g. aborted before any claim).

    Racing a claim, exactly one of the two wins.

    Example:
        ```python
        await settle_queued("sub-1", "aborted", error="user cancelled")
        ```
    """
    database = db or current_database()
    while True:
        row, now = await _read(database, submission_id)
        if row is None or row.status != "queued":
            return False
        if await _settle(database, row, now, outcome, error):
            return True


# Recovery journal --------------------------------------------------------------------


async def _journal(attempt: Attempt, op: str, db: Database | None, *args: Any) -> bool:
    database = db or current_database()
    record = database.keys.record("submission", attempt.submission_id)
    reply = await database.scripts.call(
        "journal",
        keys=[record, journal_key(database.keys, attempt.submission_id)],
        args=[op, attempt.attempt_id, *args],
    )
    return bool(reply)


async def journal_begin(attempt: Attempt, *, db: Database | None = None) -> bool:
    """Start the journal of an attempt. Fenced: only the current attempt of a running row.

    Example:
        ```python
        await journal_begin(attempt)
        ```
    """
    return await _journal(attempt, "begin", db)


async def journal_phase(
    attempt: Attempt, phase: Phase, detail: Any = None, *, db: Database | None = None
) -> bool:
    """Record that the attempt reached ``phase`` (with optional JSON ``detail``).

    Example:
        ```python
        await journal_phase(attempt, "provider_started", {"request_id": "r-9"})
        ```
    """
    return await _journal(attempt, "phase", db, phase, canonical_json(detail))


async def journal_commit(attempt: Attempt, leaf_id: str, *, db: Database | None = None) -> bool:
    """Commit the attempt's result at session entry ``leaf_id``; only the first commit counts.

    Example:
        ```python
        assert await journal_commit(attempt, leaf_id="m42")
        ```
    """
    return await _journal(attempt, "commit", db, leaf_id)


async def mark_stream_consumed(
    attempt: Attempt, stream_key: str, *, db: Database | None = None
) -> bool:
    """Record, once, that the attempt consumed the stream ``stream_key``.

    Example:
        ```python
        await mark_stream_consumed(attempt, "runs/r-1")
        ```
    """
    return await _journal(attempt, "consumed", db, stream_key)


async def read_journal(submission_id: str, *, db: Database | None = None) -> dict[str, Any]:
    """Return a submission's journal: attempt, phases per attempt, commit, consumed streams.

    Example:
        ```python
        journal = await read_journal("sub-1")
        journal["phases"][attempt.attempt_id]   # 'committed'
        ```
    """
    database = db or current_database()
    raw = await database.client.hgetall(journal_key(database.keys, submission_id))
    fields = {k.decode(): v.decode() for k, v in reply_hash(raw).items()}
    return {
        "attempt_id": fields.get("attempt"),
        "phases": {k[6:]: v for k, v in fields.items() if k.startswith("phase:")},
        "details": {k[7:]: json.loads(v) for k, v in fields.items() if k.startswith("detail:")},
        "committed_leaf_id": fields.get("committed"),
        "consumed": sorted(k[9:] for k in fields if k.startswith("consumed:")),
    }


# Session deletion --------------------------------------------------------------------


async def delete_session(session_id: str, *, db: Database | None = None) -> int:
    """Delete a session's settled submissions and journals, keeping dispatch receipts.

    Refused while anything is queued or running. While it runs, admissions into the
    session are refused. An interrupted deletion is listed by
    :func:`interrupted_deletions` and finished by calling this again. Returns the number
    of submissions removed.

    Raises:
        SessionBusyError: a submission of the session is queued or running.

    Example:
        ```python
        removed = await delete_session("s-1")
        ```
    """
    database = db or current_database()
    marker = _deleting_key(database.keys, session_id)
    await database.run_batch(
        [("SET", marker, "1"), ("SADD", _deletions_key(database.keys), session_id)], atomic=True
    )
    open_set = database.keys.index("submission", "open_session", session_id.encode())
    open_count = int(await database.client.zcard(open_set))
    if open_count:
        await _end_deletion(database, session_id)
        raise SessionBusyError(session_id, open_count)
    removed = 0
    query = Submission.find(Submission.session_id == session_id).using(database)
    while True:
        page = await query.id_page(limit=200)
        if not page.ids:
            break
        for submission_id in page.ids:
            row, _now = await _read(database, submission_id)
            if row is None:  # an entry without a row (or a quarantined row): drop it
                by_session = database.keys.index("submission", "session_id", session_id.encode())
                await database.client.zrem(by_session, submission_id)
                continue
            if row.kind == "dispatch":
                receipt = {
                    "id": row.id,
                    "session_id": row.session_id,
                    "digest": _digest(row.session_id, row.kind, row.input),
                    "accepted_at": row.accepted_at.isoformat(timespec="microseconds"),
                    "sequence": row.sequence,
                    "outcome": row.outcome,
                }
                receipts = _receipts_key(database.keys)
                await database.client.hset(receipts, row.id, json.dumps(receipt))
            try:
                if await row.delete(db=database):
                    removed += 1
            except ConflictError:
                continue  # changed meanwhile: the next page reads it again
    await _end_deletion(database, session_id)
    return removed


async def _end_deletion(db: Database, session_id: str) -> None:
    await db.run_batch(
        [
            ("DEL", _deleting_key(db.keys, session_id)),
            ("SREM", _deletions_key(db.keys), session_id),
        ],
        atomic=True,
    )


async def interrupted_deletions(*, db: Database | None = None) -> list[str]:
    """Return the sessions whose deletion started and did not finish (e.g. a crash).

    Example:
        ```python
        for session_id in await interrupted_deletions():
            await delete_session(session_id)
        ```
    """
    database = db or current_database()
    members = await database.client.smembers(_deletions_key(database.keys))
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
