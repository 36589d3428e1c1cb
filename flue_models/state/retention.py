"""Retention: pruning ended state by age, in bounded batches, from any number of processes.

Nothing is pruned unless a :class:`Retention` names the kind: ended runs (with their event
streams and chunk segments), settled submissions (with their journals; a dispatch leaves
the receipt a replay is answered with), receipts, closed streams and attempt markers.
Each kind is walked through a sorted set scored by its time (``WorkflowRun.ended_at`` and
``Submission.settled_at`` range indexes, the receipt, closed-stream and marker sets), so a
call costs O(log N + limit) per kind whatever the store holds. Rows are the truth: every
candidate is checked against its row before it is removed, rows are removed under their
version check, and every removal is idempotent, so racing pruners remove each thing once.

Example:
    ```python
    policy = Retention(ended_runs=timedelta(days=30), receipts=timedelta(days=90))
    report = await prune(policy)          # one bounded batch per kind
    while report.more:
        report = await prune(policy)
    ```
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from flue_models.connection import Database, pick_database
from flue_models.errors import ConfigurationError
from flue_models.model.query import Query
from flue_models.model.writes import retry_on_conflict
from flue_models.replies import reply_scored
from flue_models.state.run import WorkflowRun
from flue_models.state.submission import Submission

#: Items of each kind one :func:`prune` call removes at most.
DEFAULT_PRUNE_LIMIT = 500
#: Units of the ages :func:`parse_age` reads (``30d``, ``12h``, ``45m``, ``90s``).
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Short names of the kinds (``flue-models prune`` options, the dashboard's prune form)
#: and the :class:`Retention` field each sets.
KIND_NAMES = {
    "runs": "ended_runs",
    "submissions": "settled_submissions",
    "receipts": "receipts",
    "streams": "closed_streams",
    "markers": "attempt_markers",
}


def parse_age(text: str) -> dt.timedelta:
    """Read a positive age such as ``30d``, ``12h``, ``45m`` or ``90s``.

    Raises:
        ConfigurationError: not a positive age in one of those units.

    Example:
        >>> parse_age("12h")
        datetime.timedelta(seconds=43200)
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    try:
        if match and float(match[1]) > 0:
            return dt.timedelta(seconds=float(match[1]) * AGE_UNITS[match[2]])
    except OverflowError:
        pass
    raise ConfigurationError(f"{text!r}: give a positive age such as 30d, 12h or 45m")


@dataclass(frozen=True)
class Retention:
    """How long ended state is kept; a kind left ``None`` is kept forever (the default).

    Attributes:
        ended_runs: runs that ended longer ago, with their event streams.
        settled_submissions: submissions settled longer ago, with their journals; a
            dispatch leaves its receipt, so a replay is still answered.
        receipts: receipts kept longer ago (of dispatches whose row was removed).
        closed_streams: event streams closed longer ago (any stream, also one whose run
            is kept). Streams are bounded by length with ``EventStream.create(max_len=)``.
        attempt_markers: attempt markers created longer ago.

    Example:
        ```python
        Retention(ended_runs=timedelta(days=30), settled_submissions=timedelta(days=7))
        ```
    """

    ended_runs: dt.timedelta | None = None
    settled_submissions: dt.timedelta | None = None
    receipts: dt.timedelta | None = None
    closed_streams: dt.timedelta | None = None
    attempt_markers: dt.timedelta | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (
                not isinstance(value, dt.timedelta) or value <= dt.timedelta(0)
            ):
                raise ConfigurationError(
                    f"Retention.{f.name} must be a positive timedelta or None, not {value!r}."
                )

    def kinds(self) -> dict[str, dt.timedelta]:
        """Return the kinds this policy prunes, with their ages.

        Example:
            >>> Retention(receipts=dt.timedelta(days=1)).kinds()
            {'receipts': datetime.timedelta(days=1)}
        """
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


@dataclass
class PruneReport:
    """What one :func:`prune` call removed (or, in a dry run, found due), per kind.

    Attributes:
        dry_run: nothing was removed; ``counts`` are every item due, by its index.
        counts: per kind, the items removed (or due).
        pending: the kinds with more due than this call's ``limit`` removed.

    Example:
        ```python
        report = await prune(policy)
        report.counts   # {'ended_runs': 120, 'receipts': 0}
        ```
    """

    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)

    @property
    def more(self) -> bool:
        """Whether another call has more to remove.

        Example:
            ```python
            while (report := await prune(policy)).more:
                ...
            ```
        """
        return bool(self.pending)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (what ``flue-models prune --json`` prints).

        Example:
            >>> PruneReport(False, {"receipts": 2}).as_dict()
            {'counts': {'receipts': 2}, 'dry_run': False, 'more': []}
        """
        return {"counts": self.counts, "dry_run": self.dry_run, "more": sorted(self.pending)}


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


async def prune(
    retention: Retention,
    *,
    limit: int = DEFAULT_PRUNE_LIMIT,
    dry_run: bool = False,
    db: Database | None = None,
) -> PruneReport:
    """Remove what ``retention`` no longer keeps: at most ``limit`` items of each kind.

    Ages are measured by the server clock. Each kind is one ranged read of a sorted set
    and one check of each candidate's row; runs and submissions are removed under their
    version check, sets in atomic batches, so several processes may prune at once and
    each item is removed (and counted) once. Call it again while ``report.more``. With
    ``dry_run`` nothing is written and ``counts`` are every item due (from the indexes,
    O(log N) per kind).

    Raises:
        ConfigurationError: ``limit`` is not positive.

    Example:
        ```python
        report = await prune(Retention(ended_runs=timedelta(days=30)), limit=1000)
        ```
    """
    if type(limit) is not int or limit <= 0:
        raise ConfigurationError(f"The prune limit must be a positive int, not {limit!r}.")
    database = pick_database(db)
    now = await database.server_time()
    report = PruneReport(dry_run)
    for kind, age in retention.kinds().items():
        try:
            cutoff = now - age
        except OverflowError:  # older than year 1: nothing is that old
            report.counts[kind] = 0
            continue
        with database.span(f"prune.{kind}", kind):
            if dry_run:
                report.counts[kind] = await _due(database, kind, cutoff)
                continue
            removed, more = await PRUNERS[kind](database, cutoff, limit)
        report.counts[kind] = removed
        if more:
            report.pending.add(kind)
    return report


async def prune_all(
    retention: Retention,
    *,
    limit: int = DEFAULT_PRUNE_LIMIT,
    dry_run: bool = False,
    progress: Callable[[PruneReport], None] | None = None,
    db: Database | None = None,
) -> PruneReport:
    """Call :func:`prune` until nothing more is due; return the totals.

    ``progress`` is called with the running totals after each batch. A dry run is one
    call (it counts everything due at once).

    Example:
        ```python
        total = await prune_all(Retention(ended_runs=timedelta(days=30)))
        total.counts   # {'ended_runs': 1200}
        ```
    """
    total = PruneReport(dry_run, dict.fromkeys(retention.kinds(), 0))
    while True:  # one bounded batch per kind per call
        report = await prune(retention, limit=limit, dry_run=dry_run, db=db)
        for kind, count in report.counts.items():
            total.counts[kind] += count
        if progress is not None:
            progress(total)
        if not report.more or not any(report.counts.values()):
            total.pending = report.pending  # what is left (stale entries only)
            return total


# What each kind walks ----------------------------------------------------------------


def _time_sets(db: Database, kind: str) -> list[str]:
    """The sorted sets a kind (other than ``ended_runs``, walked by a query) is walked
    through, scored in epoch milliseconds: one per bucket for settled submissions and
    receipts, else one."""
    if kind == "settled_submissions":
        spec = Submission.__flue_spec__
        return [spec.range_key(bucket, "settled_at") for bucket in spec.bucket_keys(db.keys)]
    if kind == "receipts":
        return db.keys.every_submission_bucket("receipt_times")
    if kind == "attempt_markers":
        return [db.keys.attempt_markers()]
    return [db.keys.closed_streams()]


def _ended_runs(db: Database, cutoff: dt.datetime) -> Query[WorkflowRun]:
    """The runs that ended before ``cutoff``, oldest end first (every run bucket's
    ``ended_at`` set, merged)."""
    ended: Any = WorkflowRun.ended_at  # a FieldRef on the class; typed as the value
    return WorkflowRun.find(ended < cutoff).sort_by("ended_at").using(db)


async def _due(db: Database, kind: str, cutoff: dt.datetime) -> int:
    if kind == "ended_runs":
        return await _ended_runs(db, cutoff).count()
    sets = _time_sets(db, kind)
    counts = await db.run_batch([("ZCOUNT", key, "-inf", f"({_ms(cutoff)}") for key in sets])
    return sum(int(count) for count in counts)


async def _candidates(db: Database, kind: str, cutoff: dt.datetime, limit: int) -> list[str]:
    """Up to ``limit`` members due, oldest first (merged over the kind's sets)."""
    if kind == "ended_runs":
        return (await _ended_runs(db, cutoff).id_page(limit)).ids
    return [member for _score, member in await _scored(db, kind, cutoff, limit)]


async def _scored(
    db: Database, kind: str, cutoff: dt.datetime, limit: int
) -> list[tuple[float, str]]:
    """Up to ``limit`` (score, member) due, oldest first (merged over the kind's sets)."""
    bound = f"({_ms(cutoff)}"
    sets = _time_sets(db, kind)
    found = await db.run_batch(
        [("ZRANGEBYSCORE", key, "-inf", bound, "WITHSCORES", "LIMIT", 0, limit) for key in sets]
    )
    return sorted((score, member) for reply in found for member, score in reply_scored(reply))[
        :limit
    ]


async def _prune_runs(db: Database, cutoff: dt.datetime, limit: int) -> tuple[int, bool]:
    ids = await _candidates(db, "ended_runs", cutoff, limit)
    spec = WorkflowRun.__flue_spec__

    closed = db.keys.closed_streams()

    async def remove(run_id: str) -> bool:
        run = await WorkflowRun.get(run_id, db=db)
        if run is None:  # an entry without a row: the row is the truth
            await db.client.zrem(spec.range_key(spec.keys_of(db.keys, run_id), "ended_at"), run_id)
            return False
        if run.status == "active" or not run.ended_at or run.ended_at >= cutoff:
            return False
        path = WorkflowRun.stream_path(run_id)
        listed = await db.client.zscore(closed, path)
        # The row and its stream go in one call, under the row's version check: a run
        # pruned and started again under this id since it was read is not touched.
        if not await run.delete(db=db):
            return False
        if listed is not None:  # (another slot) unless the path was closed again since
            await db.scripts.call("zset_forget", keys=[closed], args=[path, listed])
        return True

    removed = [await retry_on_conflict(functools.partial(remove, i)) for i in ids]
    return sum(removed), len(ids) == limit


async def _prune_submissions(db: Database, cutoff: dt.datetime, limit: int) -> tuple[int, bool]:
    ids = await _candidates(db, "settled_submissions", cutoff, limit)
    removed = [
        await Submission.remove_settled(
            i, settled_before=cutoff, orphan_of=_time_sets(db, "settled_submissions"), db=db
        )
        for i in ids
    ]
    return sum(removed), len(ids) == limit


async def _prune_receipts(db: Database, cutoff: dt.datetime, limit: int) -> tuple[int, bool]:
    ids = await _candidates(db, "receipts", cutoff, limit)
    by_bucket: dict[str, list[str]] = {}
    receipts: dict[str, str] = {}
    for i in ids:  # a receipt and its time are in the bucket of its id
        receipts[i], times = db.keys.receipt(i)
        by_bucket.setdefault(times, []).append(i)
    removed = 0
    for times, members in by_bucket.items():
        _deleted, gone = await db.run_batch(
            [("DEL", *(receipts[i] for i in members)), ("ZREM", times, *members)],
            atomic=True,
        )
        removed += int(gone)
    return removed, len(ids) == limit


async def _prune_streams(db: Database, cutoff: dt.datetime, limit: int) -> tuple[int, bool]:
    scored = await _scored(db, "closed_streams", cutoff, limit)
    closed = db.keys.closed_streams()
    removed = 0
    for score, path in scored:
        # Deleted only if still closed before the cutoff, checked in the same call: a
        # stream made again at this path since it was listed is kept.
        keys = list(db.keys.stream(path))
        removed += int(await db.scripts.call("stream_drop", keys=keys, args=[_ms(cutoff)]))
        # Its entry goes (kept or not, the stream no longer calls for this one) unless it
        # was scored again since: a stream closed again keeps its new entry.
        await db.scripts.call("zset_forget", keys=[closed], args=[path, repr(score)])
    return removed, len(scored) == limit


async def _prune_markers(db: Database, cutoff: dt.datetime, limit: int) -> tuple[int, bool]:
    members = await _candidates(db, "attempt_markers", cutoff, limit)
    if not members:
        return 0, False
    (markers,) = _time_sets(db, "attempt_markers")
    removed = await db.client.zrem(markers, *members)
    return int(removed), len(members) == limit


PRUNERS = {
    "ended_runs": _prune_runs,
    "settled_submissions": _prune_submissions,
    "receipts": _prune_receipts,
    "closed_streams": _prune_streams,
    "attempt_markers": _prune_markers,
}
