"""Event streams: ordered, append-only logs of JSON events with Flue-style offsets.

A stream at ``path`` (``runs/<run id>``, ``agents/<name>/<id>``) keeps its metadata in
a hash and its events in a Redis Stream with explicit ids ``0-<seq>``: reads are
XRANGE, live tails wake on XREAD BLOCK, retention is XTRIM. Offsets shown to users keep
Flue's format, ``0000000000000000_0000000000000000`` for the first event. A stream is in
a Cluster slot of its own, or, when it belongs to a record (a run's), in its record's
bucket (see :meth:`~flue_models.keys.KeySpace.stream`).

Example:
    ```python
    stream = EventStream("agents/support/42")
    await stream.create()
    offset = await stream.append({"type": "log", "message": "started"})
    result = await stream.read(after="-1")
    async for event in stream.tail(after=offset):
        print(event.offset, event.data)
    ```
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from aiostream import stream as aiostream_stream
from pydantic import BaseModel, TypeAdapter, ValidationError

from flue_models.connection import Database, pick_database
from flue_models.errors import (
    ConfigurationError,
    ConnectionLostError,
    CorruptDataError,
    DecodeError,
    EncodingError,
    QueryError,
    StreamClosedError,
    StreamConflictError,
    StreamNotFoundError,
)
from flue_models.keys import RUN_STREAM_NAMES, RUNS, StreamKeys
from flue_models.model.codec import EPOCH, canonical_json, is_plain_json, value_problem
from flue_models.model.query import MAX_PAGE, page_size
from flue_models.replies import reply_pairs, reply_text
from flue_models.scripts import checked_reply

T = TypeVar("T")

#: ``after`` value meaning "from the beginning".
START = "-1"
#: ``after`` value meaning "from the current head" (only new events).
NOW = "now"
#: How long one blocking wait of a tail lasts before it checks again (at most half of
#: the client's ``timeout``).
TAIL_BLOCK_MS = 2000
#: Seconds a tail waits between two reads that found the server gone.
TAIL_RECONNECT_PAUSE = 0.2
#: Seconds a live tail keeps reconnecting to a server that went away before it gives up.
TAIL_OUTAGE_SECONDS = 60.0


def format_offset(seq: int) -> str:
    """Return the Flue offset of the ``seq``-th event (``-1`` before the first).

    Flue numbers offsets from zero: the first event (stored as ``0-1``, since a Redis
    Stream id is above ``0-0``) is ``..._0000``, the second ``..._0001``.

    Example:
        >>> format_offset(1), format_offset(2)
        ('0000000000000000_0000000000000000', '0000000000000000_0000000000000001')
    """
    return START if seq <= 0 else f"{0:016d}_{seq - 1:016d}"


def parse_offset(offset: str) -> int:
    """Return the sequence number of the event at a Flue offset (0 for ``-1``).

    Raises:
        QueryError: the offset is malformed.

    Example:
        >>> parse_offset("0000000000000000_0000000000000000")
        1
    """
    if offset == START:
        return 0
    high, sep, low = str(offset).partition("_")
    digits = high.isdigit() and low.isdigit() and high.isascii() and low.isascii()
    if not sep or not digits or len(high) > 16 or len(low) > 16 or int(high) != 0:
        raise QueryError(
            f"Malformed offset {str(offset)[:40]!r}: expected '-1', 'now' or an offset such as "
            "'0000000000000000_0000000000000000'."
        )
    return int(low) + 1


#: The latest a stored event time may be (the last millisecond of the year 9999, the
#: last a ``datetime`` holds); times count from ``EPOCH``.
LATEST_STAMP = 253_402_300_799_999


@dataclass(frozen=True)
class Event(Generic[T]):
    """One event of a stream: its offset, its data, and when it was appended (the
    server's clock, in milliseconds since 1970: ``at_ms``, and as a datetime: ``at``;
    ``None`` for an event stored without it).

    Example:
        ```python
        event.offset   # '0000000000000000_0000000000000000'
        event.data     # {'type': 'log', 'message': 'started'}
        event.at       # datetime.datetime(2026, 12, 7, 9, 30, 1, 250000, tzinfo=UTC)
        ```
    """

    offset: str
    data: T
    at_ms: int | None = None

    @property
    def at(self) -> dt.datetime | None:
        """When the event was appended (UTC, to the millisecond), or ``None``.

        Example:
            >>> Event("0000000000000000_0000000000000000", {}, 1767225600250).at.isoformat()
            '2026-01-01T00:00:00.250000+00:00'
        """
        if self.at_ms is None:
            return None
        return EPOCH + dt.timedelta(milliseconds=self.at_ms)


@dataclass(frozen=True)
class ReadResult(Generic[T]):
    """What :meth:`EventStream.read` returns.

    Attributes:
        events: the events after the requested offset, oldest first.
        next_offset: the offset of the last event returned (or the offset read from).
        up_to_date: no event exists after ``next_offset``.
        closed: the stream is closed.
        exists: the stream exists (a missing one reads as empty and up to date).

    Example:
        ```python
        result = await stream.read(after="-1", limit=100)
        ```
    """

    events: list[Event[T]]
    next_offset: str
    up_to_date: bool
    closed: bool
    exists: bool = True


@dataclass(frozen=True, order=True)
class ChunkSegment:
    """One segment of a stream's partial output (see ``append_chunk_segment``).

    Example:
        ```python
        [ChunkSegment(0, "The answer"), ChunkSegment(1, " is 42.")]
        ```
    """

    index: int
    body: str


@dataclass(frozen=True)
class StreamInfo:
    """A stream's metadata.

    Example:
        ```python
        info = await stream.meta()
        info.length, info.closed
        ```
    """

    path: str
    length: int
    closed: bool
    created_ms: int
    closed_ms: int | None
    max_len: int | None

    @property
    def head(self) -> str:
        """The offset of the last event appended.

        Example:
            ```python
            (await stream.meta()).head   # '0000000000000000_0000000000000002'
            ```
        """
        return format_offset(self.length)


async def stream_metas(db: Database) -> list[str]:
    """Return the metadata key of every stream of the store: those in a slot of their own
    and the runs' (in their run's bucket). A maintenance path: SCAN.

    Example:
        ```python
        for meta in await stream_metas(db):
            print(await db.client.hget(meta, "path"))
        ```
    """
    found: list[str] = []
    async for raw in db.client.scan_iter(match=db.keys.stream_meta_pattern(), count=500):
        key = reply_text(raw)
        if db.keys.is_stream_meta(key):  # not :events, :once, :chunks
            found.append(key)
    async for raw in db.client.scan_iter(match=db.keys.buckets_pattern(RUNS), count=500):
        key = reply_text(raw)
        bucket = db.keys.bucket_in_key(RUNS, key)
        if bucket is None:
            continue  # another collection whose name starts alike
        owned = db.keys.in_bucket(bucket).owned_parts(RUNS, key)
        if owned is not None and owned[0] == RUN_STREAM_NAMES[0]:
            found.append(key)
    return sorted(found)


class EventStream(Generic[T]):
    """An append-only event log at ``path``; ``model`` makes reads validate events.

    Args:
        path: the stream's name, e.g. ``runs/<run id>``.
        model: a Pydantic model (or any type) events are validated as when read; by
            default events are JSON objects (``dict``).
        db: the database; by default the one of the enclosing ``connect()``.

    Example:
        ```python
        class Log(BaseModel):
            type: str
            message: str

        logs = EventStream("runs/42", model=Log)
        await logs.append(Log(type="log", message="hi"))
        (await logs.read()).events[0].data.message   # 'hi'
        ```
    """

    def __init__(
        self, path: str, *, model: type[T] | None = None, db: Database | None = None
    ) -> None:
        self.path = path
        self.model = model
        self._adapter: TypeAdapter[Any] = TypeAdapter(model if model is not None else dict)
        self._db = db

    def __repr__(self) -> str:
        return f"EventStream({self.path!r})"

    def using(self, db: Database) -> EventStream[T]:
        """Return this stream bound to ``db``.

        Example:
            ```python
            await EventStream("runs/42").using(other_db).read()
            ```
        """
        return EventStream(self.path, model=self.model, db=db)

    def _database(self) -> Database:
        return pick_database(self._db)

    def _keys(self, db: Database) -> StreamKeys:
        return db.keys.stream(self.path)

    def _encode(self, data: T | Mapping[str, Any]) -> str:
        if self.model is None and type(data) is dict and is_plain_json(data):
            return canonical_json(data)  # what the checks and the dump below would give
        untyped = self.model is None  # nothing restores a key's type on the way back
        if isinstance(data, BaseModel | Mapping) and (
            problem := value_problem(data, text_keys=untyped)
        ):
            raise EncodingError(f"An event of {self.path!r} {problem}; nothing was appended.")
        if isinstance(data, BaseModel):
            return canonical_json(data.model_dump(mode="json"))
        if isinstance(data, Mapping):
            return canonical_json(self._adapter.dump_python(data, mode="json"))
        raise ConfigurationError(
            f"Events are JSON objects (dicts) or Pydantic models, not {type(data).__name__}."
        )

    def _decode(self, offset: str, payload: bytes, stamp: bytes | None = None) -> Event[T]:
        try:
            data = self._adapter.validate_json(payload)
        except ValidationError as exc:
            raise CorruptDataError(
                f"Event {offset} of stream {self.path!r} does not match "
                f"{getattr(self.model, '__name__', self.model)}: {exc.errors()[0]['msg']}."
            ) from None
        at_ms = None
        if stamp is not None:
            if not stamp.isdigit() or len(stamp) > 15 or int(stamp) > LATEST_STAMP:
                raise CorruptDataError(
                    f"Event {offset} of stream {self.path!r} has the append time {stamp!r:.40}, "
                    "not milliseconds since 1970."
                )
            at_ms = int(stamp)
        return Event(offset, cast(T, data), at_ms)

    # Lifecycle -------------------------------------------------------------------------

    async def create(self, *, max_len: int | None = None) -> bool:
        """Create the stream; creating it again keeps its events. Returns whether it was new.

        Args:
            max_len: keep at most this many events; older ones are trimmed on append.

        Example:
            ```python
            await EventStream("agents/support/42").create(max_len=10_000)
            ```
        """
        if max_len is not None and max_len <= 0:
            raise ConfigurationError(f"max_len must be positive, not {max_len}.")
        db = self._database()
        meta = self._keys(db).meta
        created = await db.scripts.call(
            "stream_create", keys=[meta], args=[self.path, "" if max_len is None else max_len]
        )
        return bool(created)

    async def close(self) -> bool:
        """Close the stream: appends are refused, tails end. Idempotent.

        Returns whether this call closed it (``False``: it was closed already).

        Raises:
            StreamNotFoundError: the stream does not exist.

        Example:
            ```python
            await stream.close()
            ```
        """
        db = self._database()
        meta, events, _once, _chunks = self._keys(db)
        reply = await db.scripts.call("stream_close", keys=[meta, events])
        return await self._closed(db, reply)

    async def _closed(self, db: Database, reply: Any) -> bool:
        """Act on a ``stream_close`` reply: list a closed stream in the closed set; say
        whether the call closed it."""
        shapes = {"missing": 1, "closed": 2, "already": 2, "kept": 1}
        status, reply = checked_reply("stream_close", reply, shapes)
        if status == "missing":
            raise StreamNotFoundError(self.path)
        if status == "kept":  # its record keeps it open
            return False
        # The closed set is in another slot: added after the close, and again by a retried
        # close, so a crash in between is repaired by closing again (or by verify --repair).
        await db.client.zadd(db.keys.closed_streams(), {self.path: int(reply[1])})
        return status == "closed"

    async def delete(self) -> bool:
        """Delete the stream: its events, idempotency keys and chunk segments, atomically.

        Returns whether it existed. Safe to retry.

        Example:
            ```python
            await stream.delete()
            ```
        """
        db = self._database()
        deleted = await db.client.delete(*self._keys(db))
        # The closed set is in another slot: a crash before this leaves an entry for a
        # missing stream, which pruning drops (and verify reports).
        await db.client.zrem(db.keys.closed_streams(), self.path)
        return bool(deleted)

    async def meta(self) -> StreamInfo | None:
        """Return the stream's metadata, or ``None`` when it does not exist.

        Example:
            ```python
            info = await stream.meta()
            ```
        """
        db = self._database()
        meta = self._keys(db).meta
        raw = reply_pairs(await db.client.hgetall(meta))
        if not raw:
            return None
        return StreamInfo(
            path=raw["path"],
            length=int(raw["seq"]),
            closed=raw["closed"] == "1",
            created_ms=int(raw["created_ms"]),
            closed_ms=int(raw["closed_ms"]) if "closed_ms" in raw else None,
            max_len=int(raw["max_len"]) if "max_len" in raw else None,
        )

    async def trim(self, keep_last: int) -> int:
        """Keep only the last ``keep_last`` events; return how many were removed.

        Offsets do not change: the remaining events keep theirs.

        Example:
            ```python
            await stream.trim(keep_last=1000)
            ```
        """
        if keep_last < 0:
            raise ConfigurationError(f"keep_last must be zero or more, not {keep_last}.")
        db = self._database()
        meta, events, _once, _chunks = self._keys(db)
        return int(await db.scripts.call("stream_trim", keys=[meta, events], args=[keep_last]))

    # Appending -------------------------------------------------------------------------

    async def _append(self, payloads: list[str], key: str = "") -> list[str]:
        db = self._database()
        digest = hashlib.sha256("\n".join(payloads).encode()).hexdigest() if key else ""
        batch = {"db.operation.batch.size": len(payloads)} if len(payloads) > 1 else {}
        with db.span("stream.append", "stream", **batch):
            reply = await db.scripts.call(
                "stream_append",
                keys=list(self._keys(db)[:3]),
                args=[key, digest, *payloads],
                unsafe=not key,  # only append_once is safe to repeat after a lost reply
            )
        shapes = {"ok": 1 + len(payloads), "missing": 1, "closed": 1, "conflict": 2}
        status, reply = checked_reply("stream_append", reply, shapes)
        if status == "missing":
            raise StreamNotFoundError(self.path)
        if status == "closed":
            raise StreamClosedError(self.path)
        offsets = [format_offset(int(seq)) for seq in reply[1:]]
        if status == "conflict":
            raise StreamConflictError(self.path, key, offsets[0])
        return offsets

    async def append(self, data: T | Mapping[str, Any]) -> str:
        """Append one event; return its offset.

        Raises:
            StreamNotFoundError: the stream was not created.
            StreamClosedError: the stream is closed.

        Example:
            ```python
            offset = await stream.append({"type": "log", "message": "hello"})
            ```
        """
        (offset,) = await self._append([self._encode(data)])
        return offset

    async def append_many(self, events: Sequence[T | Mapping[str, Any]]) -> list[str]:
        """Append several events, all or nothing; return their offsets, in order.

        Example:
            ```python
            offsets = await stream.append_many([{"n": 1}, {"n": 2}])
            ```
        """
        if not events:
            return []
        return await self._append([self._encode(e) for e in events])

    async def append_once(self, key: str, data: T | Mapping[str, Any]) -> str:
        """Append an event at most once per ``key``: an exact retry returns the first offset.

        Raises:
            StreamConflictError: ``key`` was used before with other data.

        Example:
            ```python
            offset = await stream.append_once("tool-call-7", {"type": "tool", "id": 7})
            assert await stream.append_once("tool-call-7", {"type": "tool", "id": 7}) == offset
            ```
        """
        if not key:
            raise ConfigurationError("append_once needs a non-empty idempotency key.")
        (offset,) = await self._append([self._encode(data)], key)
        return offset

    # Chunk segments --------------------------------------------------------------------

    async def append_chunk_segment(self, index: int, body: str) -> bool:
        """Keep segment ``index`` of the partial output being streamed: first writer wins.

        Chunk segments keep a provider's partial output so an interrupted stream can be
        recovered; they live beside the stream (it need not exist) and go with
        :meth:`delete`. A segment is never overwritten: returns True when this call wrote
        it, False when segment ``index`` existed (whatever its body). Safe to retry.

        Raises:
            ConfigurationError: ``index`` is not a non-negative int, or ``body`` is not text
                UTF-8 can store.

        Example:
            ```python
            await stream.append_chunk_segment(0, "The answer")
            await stream.append_chunk_segment(1, " is 42.")
            ```
        """
        if type(index) is not int or index < 0:
            raise ConfigurationError(
                f"A chunk segment index is an int of 0 or more, not {index!r}."
            )
        try:
            data = body.encode()
        except (AttributeError, UnicodeEncodeError) as exc:
            raise ConfigurationError(f"Chunk segment {index} of {self.path!r}: {exc}.") from None
        db = self._database()
        return bool(await db.client.hsetnx(self._keys(db).chunks, str(index), data))

    async def chunk_segments(self) -> list[ChunkSegment]:
        """Return the stream's chunk segments sorted by index (one round trip).

        Example:
            ```python
            text = "".join(s.body for s in await stream.chunk_segments())
            ```
        """
        db = self._database()
        key = self._keys(db).chunks
        found = reply_pairs(await db.client.hgetall(key))
        bad = [i for i in found if not (i.isascii() and i.isdigit())]
        if bad:
            raise DecodeError(key, bad[0], "is not a chunk segment index")
        return sorted(ChunkSegment(int(i), body) for i, body in found.items())

    async def delete_chunk_segments(self) -> int:
        """Delete every chunk segment of the stream; return how many there were.

        Example:
            ```python
            await stream.delete_chunk_segments()   # the output was committed
            ```
        """
        db = self._database()
        key = self._keys(db).chunks
        count, _deleted = await db.run_batch([("HLEN", key), ("DEL", key)], atomic=True)
        return int(count)

    # Reading ---------------------------------------------------------------------------

    async def read(self, after: str = START, limit: int | None = None) -> ReadResult[T]:
        """Return up to ``limit`` events after ``after`` (``"-1"``, ``"now"`` or an offset).

        A ``limit`` of zero or less means the default (100); a larger one than 1000 reads
        1000 (the Flue contract).

        ``"now"`` returns the head and no events. A missing stream reads as empty, up to
        date and not closed, with ``next_offset="-1"``.

        Raises:
            QueryError: the offset is malformed or beyond the head.

        Example:
            ```python
            result = await stream.read(after="-1", limit=50)
            for event in result.events:
                print(event.offset, event.data)
            ```
        """
        limit = page_size(limit)
        db = self._database()
        meta, events, _once, _chunks = self._keys(db)
        start_seq = 0 if after == NOW else parse_offset(after)
        start = "-" if start_seq == 0 else f"(0-{start_seq}"
        with db.span("stream.read", "stream"):
            fields, entries = await db.run_batch(
                [
                    ("HMGET", meta, "seq", "closed"),
                    ("XRANGE", events, start, "+", "COUNT", limit + 1),
                ],
                atomic=True,
            )
        head_raw, closed_raw = fields
        if head_raw is None:  # missing stream
            return ReadResult([], START, True, False, exists=False)
        head, closed = int(head_raw), reply_text(closed_raw) == "1"
        if after == NOW:
            return ReadResult([], format_offset(head), True, closed)
        if start_seq > head:
            raise QueryError(
                f"Offset {after} is beyond the head of stream {self.path!r} "
                f"({format_offset(head)})."
            )
        found: list[Event[T]] = []
        last = start_seq
        for entry_id, values in entries:
            seq = int(reply_text(entry_id).split("-", 1)[1])
            payload = values.get(b"d") if isinstance(values, dict) else None
            if payload is None or seq > head or len(found) == limit:
                break  # the close marker, or one past the page
            found.append(self._decode(format_offset(seq), payload, values.get(b"t")))
            last = seq
        return ReadResult(found, format_offset(last), last >= head, closed)

    async def tail(
        self,
        after: str = START,
        *,
        outage: float = TAIL_OUTAGE_SECONDS,
        wait_for_stream: bool = False,
    ) -> AsyncIterator[Event[T]]:
        """Yield the events after ``after``, then new ones as any process appends them.

        Waits with a blocking read (XREAD BLOCK), not a polling loop, and ends when the
        stream is closed. Cancelling the iterating task leaves the database usable. When
        the server goes away (a restart, a failover), the tail reconnects and resumes
        from the last offset it yielded, with no event lost or repeated; it gives up with
        :class:`~flue_models.errors.ConnectionLostError` after ``outage`` seconds without
        the server.

        Raises:
            StreamNotFoundError: the stream does not exist (or was deleted while tailed),
                unless ``wait_for_stream`` is true: then a missing stream is waited for.

        Example:
            ```python
            async for event in run.events.tail(after="-1"):
                print(event.data)
            ```
        """
        db = self._database()
        events_key = self._keys(db).events
        timeout = db.client.flue_timeout
        block = TAIL_BLOCK_MS if not timeout else min(TAIL_BLOCK_MS, int(timeout * 500))
        position = after
        lost_since: float | None = None
        while True:
            try:
                result = await self.read(after=position, limit=MAX_PAGE)
                lost_since = None
            except ConnectionLostError:  # the client's retries waited with backoff
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > outage:
                    raise
                await asyncio.sleep(TAIL_RECONNECT_PAUSE)  # even with no retries set
                continue
            if not result.exists and not wait_for_stream:
                raise StreamNotFoundError(self.path, "nothing to tail")
            for event in result.events:
                yield event
            position = result.next_offset
            if not result.up_to_date:
                continue
            if result.closed:
                return
            try:
                last_id = f"0-{parse_offset(position)}"
                await db.client.xread({events_key: last_id}, count=1, block=block)
            except ConnectionLostError:
                lost_since = lost_since or time.monotonic()  # the next read decides


async def tail_many(
    streams: Sequence[EventStream[T]], after: str = START, *, wait_for_stream: bool = False
) -> AsyncIterator[tuple[str, Event[T]]]:
    """Merge the tails of several streams: yield ``(path, event)`` as events arrive.

    Ends when every stream is closed; a missing stream raises as in
    :meth:`EventStream.tail` unless ``wait_for_stream``.

    Example:
        ```python
        async for path, event in tail_many([EventStream("runs/1"), EventStream("runs/2")]):
            print(path, event.offset)
        ```
    """

    async def labelled(stream: EventStream[T]) -> AsyncIterator[tuple[str, Event[T]]]:
        async for event in stream.tail(after, wait_for_stream=wait_for_stream):
            yield stream.path, event

    merged = aiostream_stream.merge(*(labelled(s) for s in streams))
    async with merged.stream() as items:
        async for item in items:
            yield item


def event_json(event: Event[Any]) -> str:
    """Return an event as one JSON line (offset, data, and the append time as ISO 8601
    when the event has one), as the CLI prints it.

    Example:
        >>> event_json(Event("0000000000000000_0000000000000001", {"a": 1}))
        '{"data":{"a":1},"offset":"0000000000000000_0000000000000001"}'
    """
    data = event.data.model_dump(mode="json") if isinstance(event.data, BaseModel) else event.data
    shown: dict[str, Any] = {"offset": event.offset, "data": data}
    if event.at is not None:
        shown["at"] = event.at.isoformat(timespec="milliseconds")
    return json.dumps(shown, sort_keys=True, separators=(",", ":"))
