"""The recovery journal: one slot per submission, for the turn its attempt is running.

``journal_begin`` creates or replaces the slot in place and raises its ``revision``;
``journal_phase`` records how far the turn got (and the stream it reads);
``journal_commit`` commits it once; ``mark_stream_consumed`` marks the recorded stream
consumed once. Every step is fenced in the ``journal`` script: only the current attempt
of a running row writes, and only into a slot it began (or was handed by
``replace_attempt``).

Example:
    ```python
    await Submission.journal_begin(attempt)
    await Submission.journal_phase(attempt, "provider_started", stream_key="runs/r-1")
    await Submission.journal_commit(attempt, leaf_id="m7")
    ```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from flue_models.connection import Database, pick_database
from flue_models.errors import ConfigurationError, DecodeError, ScriptError
from flue_models.model.base import held_once
from flue_models.model.codec import canonical_json, value_problem
from flue_models.replies import reply_pairs
from flue_models.state.submission.row import Attempt, Phase, SubmissionRow


@dataclass(frozen=True)
class Journal:
    """A submission's journal slot: the turn its attempt is running.

    Attributes:
        attempt_id: the attempt that began the slot (or was handed it by
            ``replace_attempt``).
        revision: raised by every ``journal_begin``: which turn of the submission this is.
        phase: how far the turn got; ``committed`` once committed.
        detail: the detail (JSON) given with the last phase.
        stream_key: the stream the turn reads, as recorded by ``journal_phase``.
        stream_consumed: ``mark_stream_consumed`` marked that stream consumed.
        committed_leaf_id: the session entry the turn committed at, once committed.

    Example:
        ```python
        journal = await Submission.read_journal("sub-1")
        if journal and journal.committed_leaf_id is None:
            ...   # the turn did not commit: recover it
        ```
    """

    attempt_id: str
    revision: int
    phase: Phase
    detail: Any = None
    stream_key: str | None = None
    stream_consumed: bool = False
    committed_leaf_id: str | None = None


class Journaling(SubmissionRow):
    """The journal part of :class:`~flue_models.state.submission.Submission`.

    Example:
        ```python
        journal = await Submission.read_journal("sub-1")
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def _journal(cls, attempt: Attempt, op: str, db: Database | None, *args: Any) -> int:
        database = pick_database(db)
        collection = cls.__flue_spec__.collection
        session_id = attempt.session_id
        if session_id is None:  # an attempt made without its session: its row says
            row, _now = await cls._read(database, attempt.submission_id)
            if row is None:
                return 0
            session_id = row.session_id
        bucket = cls.__flue_spec__.keys_of(database.keys, session_id)
        reply = await database.scripts.call(
            "journal",
            keys=[
                bucket.record(collection, attempt.submission_id),
                bucket.journal(attempt.submission_id),
                bucket.version_counter(collection),
            ],
            args=[op, attempt.attempt_id, *args],
            unsafe=op == "begin",  # a repeated begin would raise the revision twice
        )
        if type(reply) is not list or len(reply) != 3 or any(type(n) is not int for n in reply):
            raise ScriptError("journal", f"a reply of another shape: {reply!r:.200}")
        result, before, after = cast("list[int]", reply)
        cls._moved(attempt.attempt_id, before, after)  # the kept row takes the new version
        return result

    @classmethod
    async def journal_begin(cls, attempt: Attempt, *, db: Database | None = None) -> int | None:
        """Begin a turn: create or replace the slot in place; return its new revision.

        The slot becomes the attempt's, at phase ``before_provider``, with no stream, no
        commit and a revision one higher than before; ``None`` when the attempt is not
        the submission's current running attempt. Not idempotent: a retry after a lost
        reply begins the turn again (revision + 1), which is safe before the provider
        started.

        Example:
            ```python
            revision = await Submission.journal_begin(attempt)
            ```
        """
        return await cls._journal(attempt, "begin", db) or None

    @classmethod
    async def journal_phase(
        cls,
        attempt: Attempt,
        phase: Phase,
        detail: Any = None,
        *,
        stream_key: str | None = None,
        db: Database | None = None,
    ) -> bool:
        """Record that the turn reached ``phase`` (with optional JSON ``detail``).

        ``stream_key`` records the stream the turn reads; once recorded, another key is
        refused. False (nothing written) for a stale attempt, a slot the attempt does not
        hold, or a committed turn. Safe to retry.

        Example:
            ```python
            await Submission.journal_phase(attempt, "provider_started", stream_key="runs/r-1")
            ```
        """
        if stream_key == "":
            raise ConfigurationError("stream_key must be a non-empty string or None.")
        try:
            encoded = canonical_json(detail)
            problem = value_problem(detail, text_keys=True)
        except (TypeError, ValueError) as exc:
            problem = f"is not JSON ({exc})"
        if problem:
            raise ConfigurationError(f"The journal detail {problem}; nothing was written.")
        return bool(await cls._journal(attempt, "phase", db, phase, encoded, stream_key or ""))

    @classmethod
    async def journal_commit(
        cls, attempt: Attempt, leaf_id: str, *, db: Database | None = None
    ) -> bool:
        """Commit the turn at session entry ``leaf_id``: once per turn.

        A retry with the same leaf returns True again; another leaf gets False.

        Example:
            ```python
            assert await Submission.journal_commit(attempt, leaf_id="m42")
            ```
        """
        return bool(await cls._journal(attempt, "commit", db, leaf_id))

    @classmethod
    async def mark_stream_consumed(
        cls, attempt: Attempt, stream_key: str, *, db: Database | None = None
    ) -> bool:
        """Mark the turn's recorded stream consumed: True once, only for that key.

        False for another key than the one ``journal_phase`` recorded, and for every
        call after the first (a retry after a lost reply reads the journal to tell).

        Example:
            ```python
            await Submission.mark_stream_consumed(attempt, "runs/r-1")
            ```
        """
        return bool(await cls._journal(attempt, "consumed", db, stream_key))

    @classmethod
    def _journal_from(cls, key: str, fields: dict[str, str]) -> Journal | None:
        if not fields:
            return None
        try:
            return Journal(
                attempt_id=fields["attempt"],
                revision=int(fields["revision"]),
                phase=cast(Phase, fields["phase"]),
                detail=json.loads(fields["detail"]) if "detail" in fields else None,
                stream_key=fields.get("stream_key"),
                stream_consumed="consumed" in fields,
                committed_leaf_id=fields.get("committed"),
            )
        except (KeyError, ValueError) as exc:
            raise DecodeError(key, "journal", f"holds {fields!r}: {exc}") from None

    @classmethod
    async def read_journal(
        cls, submission_id: str, *, db: Database | None = None
    ) -> Journal | None:
        """Return a submission's journal slot, or ``None`` when no turn began.

        Raises:
            DecodeError: the slot is malformed (naming its key).

        Example:
            ```python
            journal = await Submission.read_journal("sub-1")
            journal.phase, journal.revision, journal.committed_leaf_id
            ```
        """
        database = pick_database(db)
        spec = cls.__flue_spec__
        keys = [b.journal(submission_id) for b in spec.bucket_keys(database.keys)]
        found = await database.run_batch([("HGETALL", key) for key in keys])
        (held,) = held_once(cls.__name__, [submission_id], [keys], found)
        return None if held is None else cls._journal_from(held[0], reply_pairs(held[1]))
