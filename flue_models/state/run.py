"""Workflow runs: started once, ended once, listed newest first by status and workflow.

A run's event stream ``runs/<id>`` is in the run's bucket (its Cluster slot): starting a
run creates the stream, and ending it closes the stream, in one ``MULTI`` with the row.

Example:
    ```python
    run = await WorkflowRun.start("summarize", input={"text": "..."})
    await run.events.append({"type": "log", "message": "started"})
    await run.finish(result={"summary": "..."})
    page = await WorkflowRun.list(status="completed", workflow="summarize", limit=20)
    ```
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import enum
from collections.abc import Sequence
from itertools import pairwise
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import BaseModel, Field, ValidationError

from flue_models.connection import Database, pick_database
from flue_models.errors import AlreadyExistsError, DecodeError, StreamNotFoundError
from flue_models.keys import RUN_BUCKETS, RUN_STREAMS, RUNS, KeySpace
from flue_models.model.base import Model
from flue_models.model.fields import Indexed, new_id
from flue_models.model.query import OnError, Page, on_error_choice, page_size, unreadable
from flue_models.model.writes import held, plan_save, retry_on_conflict, run_writes
from flue_models.state.events import EventStream

RunStatus = Literal["active", "completed", "errored", "cancelled"]
#: The field and value of a run's row that keep its stream open (and call for one).
ACTIVE = ("status", "active")
#: The fields of a light pointer: everything but ``input``, ``result``, ``error``.
POINTER_FIELDS = ("id", "workflow", "status", "started_at", "ended_at", "duration_ms")


class EndResult(enum.Enum):
    """What ending a run did.

    Example:
        ```python
        if await WorkflowRun.finish_id(run_id, result={}) is EndResult.NOT_FOUND:
            ...
        ```
    """

    ENDED = "ended"
    ALREADY_ENDED = "already_ended"
    NOT_FOUND = "not_found"


class RunPointer(BaseModel):
    """A light view of a run: what listings return (no input, result or error).

    Example:
        ```python
        pointer = await WorkflowRun.lookup(run_id)
        pointer.status, pointer.started_at
        ```
    """

    id: str
    workflow: str
    status: RunStatus
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    duration_ms: int | None = None


class WorkflowRun(Model):
    """One run of a workflow, with its status, timing, input, result and events.

    Indexed by status, by workflow, and by the pair; ordered by ``started_at`` (ties by
    id); spread over 16 buckets (``RUN_BUCKETS``), so over a cluster's primaries, and
    listed from all of them at once. Its events are the stream ``runs/<id>``, created
    when the run starts and closed when it ends.

    Example:
        ```python
        run = await WorkflowRun.start("summarize", input={"text": "..."})
        await run.fail(error={"message": "model timed out"})
        ```
    """

    class Meta:
        collection = RUNS
        order_by = "started_at"
        indexes = (("workflow", "status"),)
        buckets = RUN_BUCKETS

    id: str = new_id()
    workflow: Annotated[str, Indexed()]
    status: Annotated[RunStatus, Indexed()] = "active"
    started_at: dt.datetime
    ended_at: Annotated[dt.datetime | None, Indexed(range=True)] = None
    duration_ms: int | None = None
    input: Any = None
    result: Any = None
    error: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def events(self) -> EventStream[dict[str, Any]]:
        """The run's event stream, ``runs/<id>``.

        Example:
            ```python
            await run.events.append({"type": "log", "message": "step 1"})
            ```
        """
        return EventStream(self.stream_path(self.id), db=held(self).db)

    @staticmethod
    def stream_path(run_id: str) -> str:
        """Return the path of a run's event stream.

        Example:
            >>> WorkflowRun.stream_path("r-1")
            'runs/r-1'
        """
        return f"{RUN_STREAMS}{run_id}"

    @classmethod
    def owned_keys(cls, keys: KeySpace, record_id: str) -> list[str]:
        """The run's stream (in its bucket) goes with it: deleting a run deletes its
        events in the same call, under the run's version check.

        Example:
            ```python
            WorkflowRun.owned_keys(db.keys, "r-1")   # the four keys of runs/r-1
            ```
        """
        return list(keys.stream(cls.stream_path(record_id)))

    @classmethod
    async def sync_stream(cls, run_id: str, *, db: Database | None = None) -> str | None:
        """Make the run's stream agree with its row, each step checked against the row in
        the same call: created if the run is active and its stream is missing, closed if
        the run ended and its stream is open. Safe to retry and to race with a run that
        starts, ends or is pruned meanwhile: what the row says at the write decides.

        Returns ``"created"``, ``"closed"`` or ``None`` (nothing to do).

        Example:
            ```python
            await WorkflowRun.sync_stream("r-1")   # e.g. after a crash, or by verify --repair
            ```
        """
        database = pick_database(db)
        path = cls.stream_path(run_id)
        meta, events, _once, _chunks = database.keys.stream(path)
        row = cls.__flue_spec__.record_key(database.keys, run_id)
        create = [path, "", *ACTIVE]
        if await database.scripts.call("stream_create", keys=[meta, row], args=create):
            return "created"
        reply = await database.scripts.call("stream_close", keys=[meta, events, row], args=ACTIVE)
        stream: EventStream[dict[str, Any]] = EventStream(path, db=database)
        with contextlib.suppress(StreamNotFoundError):  # no stream, and none called for
            return "closed" if await stream._closed(database, reply) else None
        return None

    @classmethod
    async def start(
        cls,
        workflow: str,
        input: Any = None,
        *,
        run_id: str | None = None,
        started_at: dt.datetime | None = None,
        metadata: dict[str, Any] | None = None,
        db: Database | None = None,
    ) -> Self:
        """Start a run, or return the stored one: idempotent, first writer wins.

        A replay with the same ``run_id`` returns the stored run unchanged, and never
        revives a finished one. ``started_at`` defaults to the server's clock.

        Example:
            ```python
            run = await WorkflowRun.start("summarize", input={"text": "..."}, run_id="r-1")
            again = await WorkflowRun.start("summarize", input={"text": "..."}, run_id="r-1")
            assert again.id == run.id
            ```
        """
        database = pick_database(db)
        with database.span("run.start", cls.__flue_spec__.collection):
            return await cls._start(workflow, input, run_id, started_at, metadata, database)

    @classmethod
    async def _start(
        cls,
        workflow: str,
        input: Any,
        run_id: str | None,
        started_at: dt.datetime | None,
        metadata: dict[str, Any] | None,
        database: Database,
    ) -> Self:
        if run_id is not None:
            stored = await cls.get(run_id, db=database)
            if stored is not None:
                return await stored._ensure_stream()
        run = cls(
            workflow=workflow,
            input=input,
            started_at=started_at or await database.server_time(),
            metadata=metadata or {},
            **({"id": run_id} if run_id is not None else {}),
        )
        path = cls.stream_path(run.id)
        meta = database.keys.stream(path).meta
        # The stream is created in the same MULTI, while the row (as the save left it)
        # says the run is active: a run never starts without its stream.
        row = cls.__flue_spec__.record_key(database.keys, run.id)
        create = ("stream_create", [meta, row], [path, "", *ACTIVE])
        try:
            await run_writes(database, [plan_save(run, database.keys)], then=[create])
        except AlreadyExistsError:
            stored = await cls.get(run.id, db=database)
            assert stored is not None
            return await stored._ensure_stream()
        return run

    async def _ensure_stream(self) -> Self:
        """Create the events stream of an active run (idempotent: a crash may have cut
        the start between saving the run and creating its stream), checked against the
        row as it is then (the run may have ended since this copy was read)."""
        if self.status == "active":
            await type(self).sync_stream(self.id, db=self._database(None))
        return self

    @classmethod
    async def _end(
        cls, run_id: str, status: RunStatus, db: Database | None, **fields: Any
    ) -> EndResult:
        database = pick_database(db)

        stream: EventStream[dict[str, Any]] = EventStream(cls.stream_path(run_id), db=database)
        meta, events, _once, _chunks = database.keys.stream(stream.path)
        row = cls.__flue_spec__.record_key(database.keys, run_id)
        close = ("stream_close", [meta, events, row], ACTIVE)

        async def attempt() -> EndResult:
            run = await cls.get(run_id, db=database)
            if run is None:
                return EndResult.NOT_FOUND
            if run.status != "active":
                return EndResult.ALREADY_ENDED
            ended_at = await database.server_time()
            duration = (ended_at - run.started_at) // dt.timedelta(milliseconds=1)
            changes = {"status": status, "ended_at": ended_at, "duration_ms": duration}
            for name, value in {**changes, **fields}.items():
                setattr(run, name, value)
            # The stream closes in the same MULTI, once the row says the run ended.
            (closed,) = await run_writes(database, [plan_save(run, database.keys)], then=[close])
            with contextlib.suppress(StreamNotFoundError):  # e.g. deleted by retention
                await stream._closed(database, closed)  # (the closed set is another slot)
            return EndResult.ENDED

        verb = {"completed": "run.finish", "errored": "run.fail", "cancelled": "run.cancel"}
        with database.span(verb.get(status, "run.end"), cls.__flue_spec__.collection):
            outcome = await retry_on_conflict(attempt)
        if outcome is EndResult.ALREADY_ENDED:
            # A closed set the crash of a close left without its entry: closed again,
            # unless the row says the run is active (started again under this id since).
            await cls.sync_stream(run_id, db=database)
        return outcome

    async def _end_self(self, status: RunStatus, db: Database | None, **fields: Any) -> EndResult:
        database = self._database(db)
        outcome = await type(self)._end(self.id, status, database, **fields)
        stored = await type(self).get(self.id, db=database)
        if stored is not None:
            self._adopt(stored)  # this copy now shows what the store holds
        return outcome

    async def finish(self, result: Any = None, *, db: Database | None = None) -> EndResult:
        """End this run as ``completed`` with ``result``; the first terminal state wins.

        This copy then shows what the store holds. Safe to retry: a retry after a lost
        reply (or a crash) returns ``ALREADY_ENDED`` and closes the run's event stream if
        the first call could not.

        Example:
            ```python
            await run.finish(result={"summary": "..."})
            ```
        """
        return await self._end_self("completed", db, result=result)

    @classmethod
    async def finish_id(
        cls, run_id: str, result: Any = None, *, db: Database | None = None
    ) -> EndResult:
        """End the run ``run_id`` as ``completed``; ``NOT_FOUND`` for an unknown id.

        Example:
            ```python
            await WorkflowRun.finish_id("r-1", result={"summary": "..."})
            ```
        """
        return await cls._end(run_id, "completed", db, result=result)

    async def fail(self, error: Any = None, *, db: Database | None = None) -> EndResult:
        """End this run as ``errored`` with ``error``; the first terminal state wins.

        Example:
            ```python
            await run.fail(error={"message": "model timed out"})
            ```
        """
        return await self._end_self("errored", db, error=error)

    @classmethod
    async def fail_id(
        cls, run_id: str, error: Any = None, *, db: Database | None = None
    ) -> EndResult:
        """End the run ``run_id`` as ``errored``; ``NOT_FOUND`` for an unknown id.

        Example:
            ```python
            await WorkflowRun.fail_id("r-1", error={"message": "model timed out"})
            ```
        """
        return await cls._end(run_id, "errored", db, error=error)

    async def cancel(self, *, db: Database | None = None) -> EndResult:
        """End this run as ``cancelled``; the first terminal state wins.

        Example:
            ```python
            await run.cancel()
            ```
        """
        return await self._end_self("cancelled", db)

    @classmethod
    async def cancel_id(cls, run_id: str, *, db: Database | None = None) -> EndResult:
        """End the run ``run_id`` as ``cancelled``; ``NOT_FOUND`` for an unknown id.

        Example:
            ```python
            await WorkflowRun.cancel_id("r-1")
            ```
        """
        return await cls._end(run_id, "cancelled", db)

    @classmethod
    async def open_streams_of_ended_runs(
        cls, *, repair: bool = False, db: Database | None = None
    ) -> list[str]:
        """Return the ids of ended runs whose event stream is still open; close them with
        ``repair``.

        A process that died between ending a run and closing its stream leaves tails of
        the run waiting; any retry of the end closes it, and this finds the ones nobody
        retried. A maintenance path: it walks every ended run (two round trips per 500).

        Example:
            ```python
            stuck = await WorkflowRun.open_streams_of_ended_runs(repair=True)
            ```
        """
        database = pick_database(db)
        found: list[str] = []
        for status in ("completed", "errored", "cancelled"):
            query = cls.find(cls.status == status).using(database)
            cursor = None
            while True:
                page = await query.id_page(limit=500, cursor=cursor)
                metas = [database.keys.stream(cls.stream_path(i)).meta for i in page.ids]
                replies = await database.run_batch([("HGET", m, "closed") for m in metas])
                found += [i for i, c in zip(page.ids, replies, strict=True) if c == b"0"]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        if repair:
            for run_id in found:
                await EventStream(cls.stream_path(run_id), db=database).close()
        return sorted(found)

    @classmethod
    async def _pointers(cls, ids: Sequence[str], db: Database) -> list[RunPointer | DecodeError]:
        """Read light pointers; one that cannot be read is its DecodeError, in place."""
        spec = cls.__flue_spec__
        keys = [spec.record_key(db.keys, run_id) for run_id in ids]
        replies = await db.run_batch(
            [("HMGET", key, *POINTER_FIELDS) for key in keys], return_errors=True
        )
        pointers: list[RunPointer | DecodeError] = []
        for key, values in zip(keys, replies, strict=True):
            if isinstance(values, Exception):
                pointers.append(DecodeError(key, "(the key)", f"cannot be read: {values}"))
                continue
            if values[0] is None:
                continue  # deleted between the index read and this one
            data = {}
            try:
                for name, raw in zip(POINTER_FIELDS, values, strict=True):
                    if raw is not None:
                        data[name] = spec.codecs[name].decode(raw)
            except ValueError as exc:  # pydantic's ValidationError included
                pointers.append(DecodeError(key, name, f"cannot be read: {exc}"))
                continue
            try:
                pointers.append(RunPointer.model_validate(data))
            except ValidationError as exc:
                where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "?"
                pointers.append(DecodeError(key, where, f"cannot be read: {exc}"))
        return pointers

    @classmethod
    async def lookup(cls, run_id: str, *, db: Database | None = None) -> RunPointer | None:
        """Return the light pointer of a run (no input, result or error), or ``None``.

        Example:
            ```python
            pointer = await WorkflowRun.lookup("r-1")
            ```
        """
        found = await cls._pointers([run_id], pick_database(db))
        if not found:
            return None
        if isinstance(found[0], DecodeError):
            raise found[0]
        return found[0]

    @classmethod
    async def list(
        cls,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        on_error: OnError = "raise",
        db: Database | None = None,
    ) -> Page[RunPointer]:
        """List runs newest first (by ``started_at``, ties by id), filtered by status and workflow.

        Args:
            status: only runs in this status.
            workflow: only runs of this workflow.
            limit: page size: default 100, at most 1000; zero or less means the default.
            cursor: the ``next_cursor`` of the previous page; the last page has none.
            since: only runs started at or after this time (timezone-aware).
            until: only runs started before this time (timezone-aware).
            on_error: a run whose row cannot be read raises its ``DecodeError``
                (``"raise"``), or is left out, listed in ``Page.skipped`` and reported
                by a ``SkippedRecordWarning`` (``"skip"``), as ``Query.on_error`` does.

        Every listed run is checked against its row: a stale index entry (a crash, a
        hand edit) never lists a run under a status it does not have.

        Example:
            ```python
            page = await WorkflowRun.list(status="errored", workflow="summarize")
            for run in page.items:
                print(run.id, run.started_at)
            ```
        """
        database = pick_database(db)
        size = page_size(limit)
        errors = on_error_choice(on_error)
        conditions = cls._filters(workflow, since, until)
        if status is not None:
            conditions.append(cls.status == status)
        query = cls.find(*conditions).sort_by("-started_at").using(database)
        items: list[RunPointer] = []
        skipped: list[DecodeError] = []
        while True:  # the rows are the truth: an index entry the row disowns is passed over
            found = await query.id_page(size - len(items), cursor)
            for pointer in await cls._pointers(found.ids, database):
                if isinstance(pointer, DecodeError):
                    unreadable(pointer, errors, skipped)
                elif status in (None, pointer.status) and workflow in (None, pointer.workflow):
                    items.append(pointer)
            cursor = found.next_cursor
            if cursor is None or len(items) >= size:
                return Page(items, cursor, skipped)

    @classmethod
    async def counts(
        cls,
        workflow: str | None = None,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        db: Database | None = None,
    ) -> dict[RunStatus, int]:
        """Count runs per status, with the filters of :meth:`list` (every status is a key).

        One count per status, sent together; counted from the index sets (a stale entry
        left by a crash counts until ``flue-models verify --repair``), without reading rows.

        Example:
            ```python
            counts = await WorkflowRun.counts(workflow="summarize")
            counts["errored"], counts["active"]
            ```
        """
        database = pick_database(db)
        conditions = cls._filters(workflow, since, until)
        statuses: tuple[RunStatus, ...] = get_args(RunStatus)
        found = await asyncio.gather(
            *(
                cls.find(*conditions, cls.status == status).using(database).count()
                for status in statuses
            )
        )
        return dict(zip(statuses, found, strict=True))

    @classmethod
    async def started_histogram(
        cls,
        edges: Sequence[dt.datetime],
        workflow: str | None = None,
        *,
        db: Database | None = None,
    ) -> builtins.list[dict[RunStatus, int]]:
        """Count the runs started in each interval ``[edges[i], edges[i + 1])``, per status
        (every status is a key), optionally of one workflow: a chart of runs over time.

        One ZCOUNT per interval, status and bucket on the status (or workflow and status)
        index sets, all sent in one batch; no row is read. As :meth:`counts`, a stale
        index entry left by a crash counts until ``flue-models verify --repair``.

        Example:
            ```python
            hours = [start + dt.timedelta(hours=n) for n in range(25)]
            per_hour = await WorkflowRun.started_histogram(hours)   # 24 dicts
            ```
        """
        database = pick_database(db)
        spec = cls.__flue_spec__
        score = spec.codecs["started_at"].score
        bounds = [f"{score(edge)!r}" for edge in edges]
        statuses: tuple[RunStatus, ...] = get_args(RunStatus)
        sets = [
            spec.compound_key(keys, ("workflow", "status"), [workflow, status])
            if workflow is not None
            else spec.equality_key(keys, "status", status)
            for keys in spec.bucket_keys(database.keys)
            for status in statuses
        ]
        commands = [
            ("ZCOUNT", key, low, f"({high}") for key in sets for low, high in pairwise(bounds)
        ]
        found = await database.run_batch(commands) if commands else []
        bars = [dict.fromkeys(statuses, 0) for _ in bounds[1:]]
        for n, count in enumerate(found):
            key_index, bar = divmod(n, len(bars))
            bars[bar][statuses[key_index % len(statuses)]] += int(count)
        return bars

    @classmethod
    def _filters(
        cls, workflow: str | None, since: dt.datetime | None, until: dt.datetime | None
    ) -> builtins.list[Any]:
        started: Any = cls.started_at  # a FieldRef on the class; typed as the value
        conditions: builtins.list[Any] = []
        if workflow is not None:
            conditions.append(cls.workflow == workflow)
        if since is not None:
            conditions.append(started >= since)
        if until is not None:
            conditions.append(started < until)
        return conditions
