"""The recovery journal: which phase each attempt reached, and its one commit.

Every journal write is fenced in the ``journal`` script: only the current attempt of a
running row can write.

Example:
    ```python
    await Submission.journal_begin(attempt)
    await Submission.journal_phase(attempt, "provider_started")
    await Submission.journal_commit(attempt, leaf_id="m7")
    ```
"""

from __future__ import annotations

import json
from typing import Any

from flue_models.connection import Database, pick_database
from flue_models.model.codec import canonical_json
from flue_models.replies import reply_pairs
from flue_models.state.submission.row import Attempt, Phase, SubmissionRow


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
    async def _journal(cls, attempt: Attempt, op: str, db: Database | None, *args: Any) -> bool:
        database = pick_database(db)
        record = database.keys.record(cls.__flue_spec__.collection, attempt.submission_id)
        reply = await database.scripts.call(
            "journal",
            keys=[record, cls.journal_key(database.keys, attempt.submission_id)],
            args=[op, attempt.attempt_id, *args],
        )
        return bool(reply)

    @classmethod
    async def journal_begin(cls, attempt: Attempt, *, db: Database | None = None) -> bool:
        """Start the journal of an attempt. Fenced: only the current attempt of a running row.

        Example:
            ```python
            await Submission.journal_begin(attempt)
            ```
        """
        return await cls._journal(attempt, "begin", db)

    @classmethod
    async def journal_phase(
        cls, attempt: Attempt, phase: Phase, detail: Any = None, *, db: Database | None = None
    ) -> bool:
        """Record that the attempt reached ``phase`` (with optional JSON ``detail``).

        Example:
            ```python
            await Submission.journal_phase(attempt, "provider_started", {"request_id": "r-9"})
            ```
        """
        return await cls._journal(attempt, "phase", db, phase, canonical_json(detail))

    @classmethod
    async def journal_commit(
        cls, attempt: Attempt, leaf_id: str, *, db: Database | None = None
    ) -> bool:
        """Commit the attempt's result at session entry ``leaf_id``; only the first commit
        counts.

        Example:
            ```python
            assert await Submission.journal_commit(attempt, leaf_id="m42")
            ```
        """
        return await cls._journal(attempt, "commit", db, leaf_id)

    @classmethod
    async def mark_stream_consumed(
        cls, attempt: Attempt, stream_key: str, *, db: Database | None = None
    ) -> bool:
        """Record, once, that the attempt consumed the stream ``stream_key``.

        Example:
            ```python
            await Submission.mark_stream_consumed(attempt, "runs/r-1")
            ```
        """
        return await cls._journal(attempt, "consumed", db, stream_key)

    @classmethod
    async def read_journal(
        cls, submission_id: str, *, db: Database | None = None
    ) -> dict[str, Any]:
        """Return a submission's journal: attempt, phases per attempt, commit, consumed
        streams.

        Example:
            ```python
            journal = await Submission.read_journal("sub-1")
            journal["phases"][attempt.attempt_id]   # 'committed'
            ```
        """
        database = pick_database(db)
        key = cls.journal_key(database.keys, submission_id)
        fields = reply_pairs(await database.client.hgetall(key))
        return {
            "attempt_id": fields.get("attempt"),
            "phases": {k[6:]: v for k, v in fields.items() if k.startswith("phase:")},
            "details": {k[7:]: json.loads(v) for k, v in fields.items() if k.startswith("detail:")},
            "committed_leaf_id": fields.get("committed"),
            "consumed": sorted(k[9:] for k in fields if k.startswith("consumed:")),
        }
