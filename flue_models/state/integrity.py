"""Verify (and repair) the Flue state beyond each collection's indexes: streams against
their events and the closed set, runs against their streams.

What :func:`verify_state` reports, besides :func:`~flue_models.model.verify_collection`'s
index drift for each of ``Session``, ``Submission`` and ``WorkflowRun``:

* ``wrong_type``: a key of another type where a stream's metadata or events are kept;
* ``stream_seq``: events stored beyond the stream's recorded head (not repaired: the
  events are data, read them);
* ``stream_close``: a closed stream without its close marker, or the reverse (not
  repaired);
* ``closed_set``: a closed stream missing from the closed set, or an entry for a stream
  that is not closed (repaired);
* ``open_stream``: an ended run whose stream is still open (repaired: closed);
* ``missing_stream``: an active run without its stream (repaired: created);
* ``session_entries``: a session whose entry list cannot be decoded, disagrees with its
  ``entry_count`` or ``leaf_id``, or with its ``entry_ids`` positions (not repaired: the
  list is the truth and appends do not take the version, so a rewrite could lose one;
  rewrite it with ``Session.save_snapshot`` while no writer runs);
* ``fork_mark``: a fork not marked on its parent (repaired: marked), a fork whose parent
  is gone (not repaired: its shared history is gone; delete it), or a mark naming no
  fork of the session (repaired once older than ``FORK_GRACE``: a younger one may be a
  fork being made).

A maintenance path: it SCANs the stream keys in batches and reads each stream's head.

Example:
    ```python
    report = await verify_state(repair=True)
    for drift in report.drift:
        print(drift.kind, drift.key, drift.detail)
    ```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flue_models.connection import Database, pick_database
from flue_models.errors import DecodeError
from flue_models.model.base import Model
from flue_models.model.verify import Drift, VerifyReport, repair_collection, verify_collection
from flue_models.replies import reply_pairs, reply_text
from flue_models.state.events import EventStream, stream_metas
from flue_models.state.run import WorkflowRun
from flue_models.state.session import Session, decode_entries, encode_entry
from flue_models.state.submission import Submission

#: The built-in models :func:`verify_state` checks.
STATE_MODELS: tuple[type[Model], ...] = (Session, Submission, WorkflowRun)
#: Stream metadata keys read per round trip.
STREAM_CHUNK = 200


@dataclass
class StateReport:
    """What :func:`verify_state` found (and, with ``repair``, did).

    Example:
        ```python
        report = await verify_state()
        report.ok, report.counts()
        ```
    """

    collections: list[VerifyReport] = field(default_factory=list)
    streams: int = 0
    drift: list[Drift] = field(default_factory=list)
    repaired: int = 0

    @property
    def all_drift(self) -> list[Drift]:
        """Every drift found: each collection's, then the streams'.

        Example:
            ```python
            for drift in report.all_drift:
                print(drift.kind, drift.key)
            ```
        """
        return [d for c in self.collections for d in c.drift] + self.drift

    @property
    def ok(self) -> bool:
        """True when nothing drifted.

        Example:
            ```python
            assert (await verify_state()).ok
            ```
        """
        return not self.all_drift

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (what ``flue-models verify --json`` prints).

        Example:
            ```python
            json.dumps(report.as_dict())
            ```
        """
        return {
            "ok": self.ok,
            "collections": {c.collection: {"records": c.records} for c in self.collections},
            "streams": self.streams,
            "repaired": self.repaired,
            "drift": [
                {"kind": d.kind, "key": d.key, "id": d.shown_id, "detail": d.detail}
                for d in self.all_drift
            ],
        }


async def verify_state(
    models: tuple[type[Model], ...] = STATE_MODELS,
    *,
    repair: bool = False,
    db: Database | None = None,
) -> StateReport:
    """Verify ``models`` (the built-in state by default) and the streams; repair with
    ``repair`` (derived data only: rows and events are the truth), then verify again.

    Example:
        ```python
        report = await verify_state(repair=True)
        assert report.ok, report.all_drift   # what repair could not fix stays listed
        ```
    """
    database = pick_database(db)
    report = await _verify(models, database)
    if not repair or report.ok:
        return report
    repaired = 0
    for model, collection in zip(models, report.collections, strict=True):
        repaired += await repair_collection(model, collection, db=database)
    repaired += await _repair_streams(database, report.drift)
    again = await _verify(models, database)
    again.repaired = repaired
    return again


async def _verify(models: tuple[type[Model], ...], db: Database) -> StateReport:
    report = StateReport()
    for model in models:
        report.collections.append(await verify_collection(model, db=db))
    if WorkflowRun in models:
        report.streams, report.drift = await _verify_streams(db)
    if Session in models:
        report.drift += await _verify_sessions(db)
    return report


async def _verify_sessions(db: Database) -> list[Drift]:
    """Each session's entry list against its row and its ``entry_ids`` positions."""
    drift: list[Drift] = []
    query = Session.find().using(db)
    cursor = None
    while True:
        page = await query.id_page(limit=100, cursor=cursor)
        for session_id in page.ids:
            drift += await _check_session(db, session_id)
        if page.next_cursor is None:
            return drift
        cursor = page.next_cursor


async def _check_session(db: Database, session_id: str) -> list[Drift]:
    (row,) = await Session.read_records([session_id], db=db)
    if not isinstance(row, Session):
        return []  # gone, or undecodable (the collection's own report has it)
    _row, entries_key, ids_key, forks_key = db.keys.session(session_id)
    elements, positions, marks = await db.run_batch(
        [("LRANGE", entries_key, 0, -1), ("HGETALL", ids_key), ("ZRANGE", forks_key, 0, -1)],
        return_errors=True,
    )
    if any(isinstance(reply, Exception) for reply in (elements, positions, marks)):
        detail = "its entries, entry ids or fork marks are not a list/hash/sorted set"
        return [Drift("wrong_type", entries_key, session_id, detail)]
    found = await _check_forks(db, row, [reply_text(mark) for mark in marks])
    try:
        entries = decode_entries(entries_key, elements)
    except DecodeError as exc:
        return [*found, Drift("session_entries", entries_key, session_id, str(exc))]
    if len(entries) + row.inherited != row.entry_count:
        shared = f" + {row.inherited} shared" if row.inherited else ""
        detail = f"{len(entries)}{shared} entries, the row says {row.entry_count}"
        found.append(Drift("session_entries", entries_key, session_id, detail))
    fork_point = row.origin.entry_id if row.origin is not None else None
    if (entries[-1].id if entries else fork_point) != row.leaf_id:
        found.append(Drift("session_entries", entries_key, session_id, "leaf_id is not the last"))
    expected: dict[str, str] = {}
    position = row.base  # a fork's own list starts where its parent's history ends
    for entry in entries:
        expected.setdefault(entry.id, str(position))
        position += len(encode_entry(entry))
    if reply_pairs(positions) != expected:
        found.append(Drift("session_entries", ids_key, session_id, "entry_ids disagree"))
    return found


async def _check_forks(db: Database, row: Session, marks: list[str]) -> list[Drift]:
    """A fork against its parent's mark, and the session's marks against its forks."""
    found: list[Drift] = []
    if row.fork_of is not None:
        parent_key, _entries, _ids, forks_key = db.keys.session(row.fork_of)
        marked, parent = await db.run_batch([("ZSCORE", forks_key, row.id), ("EXISTS", parent_key)])
        if not parent:
            detail = f"a fork of {row.fork_of!r}, which is gone (and its shared history)"
            found.append(Drift("fork_mark", forks_key, row.id, detail))
        elif marked is None:
            detail = f"a fork not marked on its parent {row.fork_of!r}"
            found.append(Drift("fork_mark", forks_key, row.id, detail))
    if marks:
        forks_key = db.keys.session(row.id).forks
        children = await Session.read_records(marks, db=db)
        for child_id, child in zip(marks, children, strict=True):
            if child is None or (isinstance(child, Session) and child.fork_of != row.id):
                detail = f"marks {child_id!r} as its fork, which is not"
                found.append(Drift("fork_mark", forks_key, row.id, detail))
    return found


async def _verify_streams(db: Database) -> tuple[int, list[Drift]]:
    metas = await stream_metas(db)
    drift: list[Drift] = []
    closed_set = db.keys.closed_streams()
    seen_closed: set[str] = set()
    for start in range(0, len(metas), STREAM_CHUNK):
        part = sorted(metas)[start : start + STREAM_CHUNK]
        metas_read = await db.run_batch(
            [("HMGET", key, "path", "seq", "closed") for key in part], return_errors=True
        )
        for key, values in zip(part, metas_read, strict=True):
            if isinstance(values, Exception):
                drift.append(Drift("wrong_type", key, "", f"not a stream's metadata: {values}"))
                continue
            path, seq_raw, closed_raw = (None if v is None else reply_text(v) for v in values)
            if path is None or seq_raw is None or not seq_raw.isdigit():
                drift.append(Drift("undecodable", key, "", f"stream metadata {values!r}"))
                continue
            drift += await _check_stream(db, key, path, int(seq_raw), closed_raw == "1")
            if closed_raw == "1":
                seen_closed.add(path)
    listed = {reply_text(m) for m in await db.client.zrange(closed_set, 0, -1)}
    for path in sorted(seen_closed - listed):
        drift.append(Drift("closed_set", closed_set, path, "closed, but not in the closed set"))
    for path in sorted(listed - seen_closed):
        drift.append(Drift("closed_set", closed_set, path, "listed, but not a closed stream"))
    drift += await _verify_run_streams(db)
    return len(metas), drift


async def _check_stream(db: Database, meta: str, path: str, seq: int, closed: bool) -> list[Drift]:
    own, events, _once, _chunks = db.keys.stream(path)
    if meta != own:
        return [Drift("undecodable", meta, path, "its path names another stream")]
    reply = await db.run_batch([("XREVRANGE", events, "+", "-", "COUNT", 2)], return_errors=True)
    if isinstance(reply[0], Exception):
        return [Drift("wrong_type", events, path, f"not a Redis Stream: {reply[0]}")]
    last: list[Any] = reply[0]
    found: list[Drift] = []
    marker = bool(last) and b"closed" in (last[0][1] or {})
    newest_event = (
        last[1] if marker and len(last) > 1 else (last[0] if last and not marker else None)
    )
    if newest_event is not None:
        newest = int(reply_text(newest_event[0]).split("-", 1)[1])
        if newest > seq:
            found.append(Drift("stream_seq", events, path, f"event {newest} beyond head {seq}"))
    if closed != marker:
        state = "closed without its close marker" if closed else "a close marker, not closed"
        found.append(Drift("stream_close", events, path, state))
    return found


async def _verify_run_streams(db: Database) -> list[Drift]:
    drift = [
        Drift("open_stream", db.keys.stream(WorkflowRun.stream_path(i)).meta, i, "run ended")
        for i in await WorkflowRun.open_streams_of_ended_runs(db=db)
    ]
    query = WorkflowRun.find(WorkflowRun.status == "active").using(db)
    cursor = None
    while True:
        page = await query.id_page(limit=500, cursor=cursor)
        metas = [db.keys.stream(WorkflowRun.stream_path(i)).meta for i in page.ids]
        exists = await db.run_batch([("EXISTS", m) for m in metas])
        drift += [
            Drift("missing_stream", meta, run_id, "active run without its stream")
            for run_id, meta, there in zip(page.ids, metas, exists, strict=True)
            if not there
        ]
        if page.next_cursor is None:
            return drift
        cursor = page.next_cursor


async def _repair_fork_mark(db: Database, drift: Drift) -> bool:
    """Mark a fork on its parent, or drop marks naming no fork (once old enough)."""
    session = await Session.get(drift.record_id, db=db)
    if session is None:
        return False
    if session.fork_of is not None and drift.key == db.keys.session(session.fork_of).forks:
        parent = await Session.get(session.fork_of, db=db)
        if parent is None:
            return False  # its shared history is gone: not repaired
        now = int((await db.server_time()).timestamp() * 1000)
        return bool(await db.client.zadd(drift.key, {session.id: now}, nx=True))
    await Session.forks_of(session.id, db=db)  # drops the marks of no fork older than the grace
    return True


async def _repair_streams(db: Database, drift: list[Drift]) -> int:
    acted = 0
    for d in drift:
        if d.kind == "closed_set":
            await _repair_closed_set(db, d)
        elif d.kind in ("open_stream", "missing_stream"):
            if await WorkflowRun.sync_stream(d.record_id, db=db) is None:
                continue  # the row says otherwise now: nothing to repair
        elif d.kind == "fork_mark":
            if not await _repair_fork_mark(db, d):
                continue
        else:
            continue
        acted += 1
    return acted


async def _repair_closed_set(db: Database, drift: Drift) -> None:
    """List a closed stream in the closed set, or drop an entry naming no closed stream;
    neither undoes a close that lands meanwhile (a close lists its stream with its own,
    later, time: ``GT`` keeps the later one, and an entry scored again is not dropped)."""
    path = drift.record_id
    listed = await db.client.zscore(drift.key, path)  # before the stream is read
    info = await EventStream(path, db=db).meta()
    if info is not None and info.closed:
        await db.client.zadd(drift.key, {path: info.closed_ms or 0}, gt=True)
    elif listed is not None:  # closed since the score was read: it was scored again
        await db.scripts.call("zset_forget", keys=[drift.key], args=[path, listed])
