"""A submission's row, its errors and tokens, and what every part of its API shares.

The public class :class:`~flue_models.state.submission.Submission` is assembled from one
part per seam (admission, claims and leases, journal, deletion), each a subclass of
:class:`SubmissionRow`, which holds the fields, the keys and the fenced read and write.

Example:
    ```python
    row = await Submission.get("sub-1")   # one round trip; a malformed row is quarantined
    row.status, row.attempt_count
    ```
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from flue_models.connection import Database, pick_database
from flue_models.errors import DecodeError
from flue_models.keys import KeySpace
from flue_models.model.base import Model, held_once
from flue_models.model.codec import canonical_json
from flue_models.model.fields import Indexed
from flue_models.model.spec import OWNED_FIELD, decode_owned
from flue_models.model.writes import held, hold, plan_save, run_writes
from flue_models.replies import reply_hash, reply_time

Kind = Literal["dispatch", "direct"]
Status = Literal["queued", "running", "settled"]
Outcome = Literal["completed", "failed", "aborted"]
Phase = Literal["before_provider", "provider_started", "tool_request_recorded", "committed"]

#: Default lease of a claim.
DEFAULT_LEASE = dt.timedelta(seconds=30)
#: A submission times out this long after its first claim unless told otherwise.
DEFAULT_TIMEOUT = dt.timedelta(hours=1)
#: How many running attempts' rows a process keeps (see :meth:`SubmissionRow._keep`).
ATTEMPTS_KEPT = 4096


@dataclass(frozen=True)
class Attempt:
    """A claim: the fencing token every later step of the attempt presents.

    Example:
        ```python
        attempt = await Submission.claim("sub-1", owner_id="worker-a")
        await Submission.finish(attempt)
        ```
    """

    submission_id: str
    attempt_id: str
    owner_id: str
    lease_expires_at: dt.datetime
    #: The submission's session, which names its bucket (``None``: looked up by id).
    session_id: str | None = None


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
        result = await Submission.admit_dispatch("d-1", session_id="s-1", input={})
        if result.conflict:
            ...
        ```
    """

    submission: SubmissionRow | None
    created: bool
    conflict: bool = False
    receipt: dict[str, Any] | None = field(default=None)


def digest(session_id: str, kind: str, input: Any) -> str:
    """Return what an exact replay of an admission must match, as canonical JSON.

    Example:
        >>> digest("s-1", "direct", {"b": 1, "a": 2})
        '{"input":{"a":2,"b":1},"kind":"direct","session_id":"s-1"}'
    """
    return canonical_json({"session_id": session_id, "kind": kind, "input": input})


#: The kept rows of running attempts, by attempt id (see :meth:`SubmissionRow._keep`).
_ATTEMPT_ROWS: dict[str, SubmissionRow] = {}


class SubmissionRow(Model):
    """The fields of a submission, its keys, and its fenced reads and writes.

    ``open_session`` holds the session id while the submission is unsettled: its index,
    ordered by ``sequence``, gives each session's head. Rows are placed by
    ``session_id`` (``Meta.partition_by``), so everything of one session is in one bucket.

    Example:
        ```python
        row = await Submission.get("sub-1")
        row.status, row.sequence
        ```
    """

    class Meta:
        abstract = True

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
    settled_at: Annotated[dt.datetime | None, Indexed(range=True)] = None
    outcome: Outcome | None = None
    error: Any = None
    open_session: Annotated[str | None, Indexed()] = None

    def lease_expired(self, now: dt.datetime) -> bool:
        """Whether this row is running on a lease that ended before ``now`` (read
        ``now`` from the server's clock: leases are judged by it).

        Example:
            ```python
            row.lease_expired(await db.server_time())   # True: another worker may take it
            ```
        """
        lease = self.lease_expires_at
        return self.status == "running" and lease is not None and lease < now

    # Keys ------------------------------------------------------------------------------

    @classmethod
    def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
        """The journal goes with the row (``keys``: the row's bucket).

        Example:
            ```python
            Submission.owned_keys(bucket_keys, "s")   # ['flue::{submission:6}/journal:cw']
            ```
        """
        return [keys.journal(record_id)]

    # Reads and writes ------------------------------------------------------------------

    @classmethod
    async def _read_many(
        cls, db: Database, submission_ids: list[str], sessions: Sequence[str | None] = ()
    ) -> tuple[list[Self | None], dt.datetime]:
        """Read rows and the server clock in one round trip; quarantine malformed rows.

        ``sessions``: each id's session where the caller knows it (its bucket alone is
        read); an id without one is looked for in every bucket.

        Raises:
            CorruptDataError: rows of two sessions hold one id.
        """
        spec = cls.__flue_spec__
        known = list(sessions) or [None] * len(submission_ids)
        candidates = [
            spec.candidate_keys(db.keys, i) if s is None else [spec.record_key(db.keys, i, s)]
            for i, s in zip(submission_ids, known, strict=True)
        ]
        rows, now, _after = await cls._read_candidates(db, submission_ids, candidates)
        return rows, now

    @classmethod
    async def _read_keys_of(
        cls, db: Database, submission_ids: list[str], keys: list[str]
    ) -> tuple[list[Self | None], dt.datetime]:
        """:meth:`_read_many` of rows whose keys are known (a query found them there)."""
        rows, now, _after = await cls._read_candidates(db, submission_ids, [[k] for k in keys])
        return rows, now

    @classmethod
    async def _read_candidates(
        cls,
        db: Database,
        submission_ids: list[str],
        candidates: list[list[str]],
        after: Sequence[tuple[Any, ...]] = (),
    ) -> tuple[list[Self | None], dt.datetime, list[Any]]:
        """The rows at their candidate keys, the server clock, and the replies of the
        ``after`` commands sent behind them in the same batch."""
        commands = [("HGETALL", key) for each in candidates for key in each]
        replies = await db.run_batch([*commands, ("TIME",), *after])
        raws, time = replies[: len(commands)], replies[len(commands)]
        held = held_once(cls.__name__, submission_ids, candidates, raws)
        rows: list[Self | None] = []
        for submission_id, found in zip(submission_ids, held, strict=True):
            row = None
            if found is not None:
                key, raw = found
                try:
                    row = cls.from_hash(key, reply_hash(raw), db)
                except DecodeError as exc:
                    await cls._quarantine(db, key, submission_id, reply_hash(raw), exc)
            rows.append(row)
        return rows, reply_time(time), replies[len(commands) + 1 :]

    @classmethod
    async def _read_then(
        cls, db: Database, submission_id: str, command: tuple[Any, ...]
    ) -> tuple[Self | None, dt.datetime, Any]:
        """Read a row (every bucket), the server clock and ``command``'s reply, sent after
        them in the same round trip (run after them where :attr:`Database.batches_in_order`)."""
        candidates = [cls.__flue_spec__.candidate_keys(db.keys, submission_id)]
        (row,), now, (reply,) = await cls._read_candidates(
            db, [submission_id], candidates, [command]
        )
        return row, now, reply

    @classmethod
    async def _read(
        cls, db: Database, submission_id: str, session_id: str | None = None
    ) -> tuple[Self | None, dt.datetime]:
        """Read a row and the server clock in one round trip (its session's bucket when
        ``session_id`` is given, else every bucket)."""
        (row,), now = await cls._read_many(db, [submission_id], [session_id])
        return row, now

    @classmethod
    async def get(
        cls, record_id: str, *, partition: str | None = None, db: Database | None = None
    ) -> Self | None:
        """Return one submission in one round trip (``None`` if absent or malformed).

        ``partition``: its session id, when known: its bucket alone is read (else every
        bucket is asked). A row that cannot be decoded is settled as failed ("malformed")
        and taken out of every index, so one bad row never stops a queue.

        Raises:
            CorruptDataError: submissions of two sessions hold the id.

        Example:
            ```python
            row = await Submission.get("sub-1")
            row = await Submission.get("sub-1", partition="s-1")
            ```
        """
        row = (await cls._read(pick_database(db), record_id, partition))[0]
        if row is not None and partition is not None and row.session_id != partition:
            return None  # in the bucket the session hashes to, but of another session
        return row

    @classmethod
    async def _quarantine(
        cls,
        db: Database,
        key: str,
        submission_id: str,
        raw: dict[bytes, bytes],
        exc: DecodeError,
    ) -> None:
        """Settle an undecodable row as failed ("malformed") and take it out of every index.

        The sets are those the row recorded it owns; a row whose record of them is
        unreadable too leaves every set its raw values could have put it in.
        """
        spec = cls.__flue_spec__
        owned = raw.get(OWNED_FIELD.encode())
        try:
            sets = list(decode_owned(db.keys, key, owned)[0]) if owned is not None else []
        except DecodeError:
            sets = []
        bucket = db.keys.in_bucket(db.keys.bucket_in_key(spec.collection, key) or 0)
        if not sets:  # the row's own bucket: the one its key is in
            sets = [spec.range_key(bucket, name) for name in spec.range_fields]
            for name in spec.equality_fields:
                value = raw.get(name.encode())
                if value is not None:  # a str field stores the bytes its index key encodes
                    sets.append(bucket.index(spec.collection, name, value))
        error = json.dumps(f"malformed submission row: {exc}")
        settled: list[Any] = ["status", "settled", "outcome", "failed", "error", error]
        if owned is not None:  # the first quarantine (it removes _owned): a new version
            # From the bucket's counter, as every write takes one: a copy read or kept
            # before can no longer write over the quarantined row (its version check
            # refuses it, and it reads the row again). No copy can be made after.
            settled += ["version", await db.client.incr(bucket.version_counter(spec.collection))]
        await db.run_batch(
            [
                *[("ZREM", s, submission_id) for s in sets],
                ("HSET", key, *settled),
                ("HDEL", key, "open_session", "owner_id", "lease_expires_at", OWNED_FIELD),
            ],
            atomic=True,
        )

    async def _write(
        self,
        db: Database,
        guard: list[str] | None = None,
        *,
        admitting: bool = False,
        one_server: bool = False,
        hashes: dict[str, dict[str, bytes]] | None = None,
        clock: str | None = None,
    ) -> None:
        """Write this row under its version check (and ``guard`` keys that must not exist).

        ``hashes``: owned hashes (the journal) replaced by the given fields in the same
        atomic write.

        ``admitting``: the row takes its ``sequence`` from the session's counter inside
        the same script, so admission order is the order rows land, and a refused
        admission (an exact replay, a racing one) consumes no number; ``accepted_at``
        takes the time that number reads as. The id was checked in every other bucket:
        by the caller's read just before, or, with ``one_server``, by the guards of this
        very write (keys of other slots, which one server allows).

        ``clock``: the datetime field that takes the server's time as the script writes
        (whatever this copy holds in it).

        Raises:
            ConflictError: another writer got there first (``retry_on_conflict`` retries).
            GuardError: a guard key exists.
        """
        counter = None
        if admitting:
            counter = (db.keys.session_submissions(self.session_id).sequence, "sequence")
            clock = "accepted_at"
        write = plan_save(self, db.keys, counter=counter, clock=clock)
        write.absent = guard or []
        write.hashes = hashes or {}
        await run_writes(db, [write], ids_checked=admitting, one_server=one_server)

    async def _keep_receipt(self, db: Database, now: dt.datetime) -> None:
        """Keep the receipt a replay of this dispatch is answered with once the row is
        gone (written before the row is removed: a crash in between leaves both)."""
        receipt = {
            "id": self.id,
            "session_id": self.session_id,
            "digest": digest(self.session_id, self.kind, self.input),
            "accepted_at": self.accepted_at.isoformat(timespec="microseconds"),
            "sequence": self.sequence,
            "outcome": self.outcome,
        }
        receipt_key, times = db.keys.receipt(self.id)
        await db.run_batch(
            [
                ("SET", receipt_key, json.dumps(receipt)),
                ("ZADD", times, int(now.timestamp() * 1000), self.id),
            ],
            atomic=True,
        )

    # The rows of running attempts ----------------------------------------------------

    def _keep(self) -> None:
        """Keep this row, just written running under an attempt, as the state a later
        step of the attempt plans from (see :meth:`_kept`); any other row is let go.

        Attempt ids are random (uuid4), so they key the rows of every database; a
        process keeps up to :data:`ATTEMPTS_KEPT`, then starts again.
        """
        attempt_id = self.attempt_id
        if attempt_id is None or self.status != "running":
            return
        if len(_ATTEMPT_ROWS) >= ATTEMPTS_KEPT:
            _ATTEMPT_ROWS.clear()
        _ATTEMPT_ROWS[attempt_id] = self

    @classmethod
    def _kept(cls, db: Database, attempt_id: str) -> Self | None:
        """Take the row kept for ``attempt_id`` on ``db`` (``None``: none kept).

        The row is as this process last wrote it. A step of the attempt that changes it
        writes under the version it holds: the store refuses the write (a conflict) if
        anything wrote the row since, and the step then reads the row and decides again.
        Taken, not copied: a refused write leaves it changed, and it is kept again only
        once written.
        """
        row = _ATTEMPT_ROWS.pop(attempt_id, None)
        if isinstance(row, cls) and held(row).db is db:
            return row
        return None

    @staticmethod
    def _moved(attempt_id: str, before: int, after: int) -> None:
        """A journal step of ``attempt_id`` gave the row version ``after`` (it read
        ``before``) and changed nothing else of it: the kept row takes the new version
        if it was the one the step read; else it is let go."""
        row = _ATTEMPT_ROWS.get(attempt_id)
        if row is None or before == after:
            return
        if held(row).version == before:
            hold(row, version=after)
        else:
            del _ATTEMPT_ROWS[attempt_id]

    def _open_in(self, session_id: str) -> bool:
        """Whether this row is an unsettled submission of ``session_id`` (what the
        ``open_session`` index proposes, as the row decides)."""
        return self.status != "settled" and self.session_id == session_id

    def _settle(self, now: dt.datetime, outcome: Outcome, error: Any) -> None:
        """Turn this row into a settled one (the caller writes it under the version check)."""
        self.status = "settled"
        self.outcome = outcome
        self.error = error
        self.settled_at = now
        self.open_session = self.owner_id = self.lease_expires_at = None
