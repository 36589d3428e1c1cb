"""Attempt markers: durable evidence that an attempt started, kept until it is resolved.

A runtime inserts a marker before it starts an attempt's side effects and deletes it when
the attempt is resolved; a marker left behind after a crash says which attempt to
recover. One sorted set per collection, scored by the marker's creation time (server
clock), so listing is oldest first and retention prunes by age.

Example:
    ```python
    marker = await Submission.insert_attempt_marker(attempt.submission_id, attempt.attempt_id)
    ...
    await Submission.delete_attempt_marker(attempt.submission_id, attempt.attempt_id)
    ```
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import cast

from flue_models.connection import Database, pick_database
from flue_models.errors import ConfigurationError, DecodeError
from flue_models.model.codec import canonical_json, value_problem
from flue_models.state.submission.row import SubmissionRow


@dataclass(frozen=True)
class AttemptMarker:
    """Evidence that attempt ``attempt_id`` of submission ``submission_id`` started.

    Example:
        ```python
        for marker in await Submission.list_attempt_markers():
            print(marker.submission_id, marker.attempt_id, marker.created_at)
        ```
    """

    submission_id: str
    attempt_id: str
    created_at: dt.datetime


def _member(submission_id: str, attempt_id: str) -> str:
    if not submission_id or not attempt_id:
        raise ConfigurationError("An attempt marker needs a submission id and an attempt id.")
    problem = value_problem([submission_id, attempt_id])
    if problem:
        raise ConfigurationError(f"An attempt marker's ids: {problem}.")
    return canonical_json([submission_id, attempt_id])


def _from_ms(ms: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


class Marking(SubmissionRow):
    """The attempt-marker part of :class:`~flue_models.state.submission.Submission`.

    Example:
        ```python
        stale = await Submission.list_attempt_markers()
        ```
    """

    class Meta:
        abstract = True

    @classmethod
    async def insert_attempt_marker(
        cls, submission_id: str, attempt_id: str, *, db: Database | None = None
    ) -> AttemptMarker:
        """Record that an attempt started; idempotent: a repeat keeps the first time.

        Returns the marker as stored (its ``created_at`` from the first insert). Safe to
        retry.

        Example:
            ```python
            marker = await Submission.insert_attempt_marker("sub-1", attempt.attempt_id)
            ```
        """
        database = pick_database(db)
        member = _member(submission_id, attempt_id)
        now = await database.server_time()
        key = database.keys.attempt_markers()
        ms = int(now.timestamp() * 1000)
        _added, score = await database.run_batch(
            [("ZADD", key, "NX", ms, member), ("ZSCORE", key, member)], atomic=True
        )
        return AttemptMarker(submission_id, attempt_id, _from_ms(float(score)))

    @classmethod
    async def delete_attempt_marker(
        cls, submission_id: str, attempt_id: str, *, db: Database | None = None
    ) -> bool:
        """Delete the marker of exactly this (submission, attempt); return whether it
        existed. A marker of another attempt of the submission stays. Safe to retry.

        Example:
            ```python
            await Submission.delete_attempt_marker("sub-1", attempt.attempt_id)
            ```
        """
        database = pick_database(db)
        member = _member(submission_id, attempt_id)
        return bool(await database.client.zrem(database.keys.attempt_markers(), member))

    @classmethod
    async def list_attempt_markers(
        cls, *, limit: int = 1000, db: Database | None = None
    ) -> list[AttemptMarker]:
        """Return up to ``limit`` attempt markers, oldest first.

        Example:
            ```python
            for marker in await Submission.list_attempt_markers():
                row = await Submission.get(marker.submission_id)
            ```
        """
        if limit <= 0:
            raise ConfigurationError(f"limit must be positive, not {limit}.")
        database = pick_database(db)
        found = cast(
            "list[tuple[bytes, float]]",
            await database.client.zrange(
                database.keys.attempt_markers(), 0, limit - 1, withscores=True
            ),
        )
        markers = []
        for member, score in found:
            try:
                submission_id, attempt_id = json.loads(member)
                markers.append(AttemptMarker(str(submission_id), str(attempt_id), _from_ms(score)))
            except (ValueError, TypeError) as exc:
                key = database.keys.attempt_markers()
                raise DecodeError(
                    key, "member", f"{member[:80]!r} is not a marker ({exc})"
                ) from None
        return markers
