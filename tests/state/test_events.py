"""EventStream on a real server: offsets, idempotency, reads, retention and live tails."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import flue_models as fm
from flue_models import EventStream
from flue_models.state.events import format_offset, tail_many
from tests.waiting import child_process, poll_until, within

ROOT = Path(__file__).parents[2]


def off(n: int) -> str:
    return format_offset(n)


#: The server clock's own resolution, as event times keep it.
MS = dt.timedelta(milliseconds=1)


@pytest.fixture
async def stream(db: fm.Database) -> EventStream[dict[str, Any]]:
    created: EventStream[dict[str, Any]] = EventStream("agents/support/42")
    assert await created.create() is True
    return created


async def test_offsets_count_appends_from_the_first_events_zero(
    stream: EventStream[dict[str, Any]],
) -> None:
    assert off(1) == "0000000000000000_0000000000000000"
    assert [await stream.append({"n": i}) for i in range(3)] == [off(1), off(2), off(3)]
    assert await stream.append_many([{"n": 3}, {"n": 4}]) == [off(4), off(5)]


async def test_create_is_idempotent_and_keeps_the_events(
    stream: EventStream[dict[str, Any]],
) -> None:
    await stream.append({"n": 1})
    assert await stream.create() is False
    assert [e.data for e in (await stream.read()).events] == [{"n": 1}]


async def test_appending_to_a_missing_or_closed_stream_raises_naming_the_path(
    db: fm.Database,
) -> None:
    missing: EventStream[dict[str, Any]] = EventStream("runs/nope")
    with pytest.raises(fm.StreamNotFoundError, match="runs/nope"):
        await missing.append({"n": 1})
    closed: EventStream[dict[str, Any]] = EventStream("runs/closed")
    await closed.create()
    assert await closed.close() is True
    assert await closed.close() is False  # idempotent
    with pytest.raises(fm.StreamClosedError, match="runs/closed"):
        await closed.append({"n": 1})
    with pytest.raises(fm.StreamClosedError):
        await closed.append_many([{"n": 1}, {"n": 2}])
    assert (await closed.read()).events == []
    with pytest.raises(fm.StreamNotFoundError):
        await missing.close()


async def test_append_many_is_all_or_nothing(stream: EventStream[dict[str, Any]]) -> None:
    with pytest.raises(fm.ConfigurationError, match="JSON objects"):
        await stream.append_many([{"n": 1}, "not an object"])  # type: ignore[list-item]
    assert (await stream.read()).events == []


async def test_append_once_returns_the_first_offset_on_an_exact_retry(
    stream: EventStream[dict[str, Any]],
) -> None:
    await stream.append({"n": 0})
    first = await stream.append_once("call-7", {"tool": "search", "args": {"q": "x"}})
    again = await stream.append_once("call-7", {"args": {"q": "x"}, "tool": "search"})
    assert first == again == off(2)
    with pytest.raises(fm.StreamConflictError, match="call-7"):
        await stream.append_once("call-7", {"tool": "search", "args": {"q": "y"}})
    assert len((await stream.read()).events) == 2
    await stream.close()
    assert await stream.append_once("call-7", {"tool": "search", "args": {"q": "x"}}) == first


async def test_twenty_concurrent_appenders_on_two_clients_leave_no_gaps(
    db: fm.Database, stream: EventStream[dict[str, Any]], redis_url: str, protocol: int
) -> None:
    other = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    try:
        on_other = stream.using(other)
        offsets = await asyncio.gather(
            *((stream if i % 2 else on_other).append({"i": i}) for i in range(20))
        )
        assert sorted(offsets) == [off(n) for n in range(1, 21)]
        events = (await stream.read(limit=100)).events
        assert sorted(e.data["i"] for e in events) == list(range(20))
    finally:
        await other.close()


async def test_read_semantics(stream: EventStream[dict[str, Any]]) -> None:
    for i in range(5):
        await stream.append({"n": i})
    page = await stream.read(after="-1", limit=2)
    assert [e.offset for e in page.events] == [off(1), off(2)]
    assert (page.next_offset, page.up_to_date, page.closed) == (off(2), False, False)
    rest = await stream.read(after=page.next_offset, limit=3)  # exactly full, ends at the head
    assert [e.data["n"] for e in rest.events] == [2, 3, 4]
    assert (rest.next_offset, rest.up_to_date) == (off(5), True)
    head = await stream.read(after="now")
    assert (head.events, head.next_offset, head.up_to_date) == ([], off(5), True)
    nothing_new = await stream.read(after=off(5))
    assert (nothing_new.events, nothing_new.next_offset, nothing_new.up_to_date) == (
        [],
        off(5),
        True,
    )
    with pytest.raises(fm.ConfigurationError, match="beyond the head"):
        await stream.read(after=off(6))
    with pytest.raises(fm.ConfigurationError, match="Malformed"):
        await stream.read(after="yesterday")
    await stream.close()
    closed = await stream.read(after=off(4))
    assert ([e.data["n"] for e in closed.events], closed.up_to_date, closed.closed) == (
        [4],
        True,
        True,
    )


async def test_a_missing_stream_reads_as_empty_and_up_to_date(db: fm.Database) -> None:
    result = await EventStream("runs/never").read(after="-1")
    assert (result.events, result.next_offset, result.up_to_date, result.closed) == (
        [],
        "-1",
        True,
        False,
    )
    assert await EventStream("runs/never").meta() is None


async def test_meta_delete_and_retention(stream: EventStream[dict[str, Any]]) -> None:
    await stream.append_many([{"n": i} for i in range(10)])
    info = await stream.meta()
    assert info is not None
    assert (info.path, info.length, info.closed, info.head) == (
        "agents/support/42",
        10,
        False,
        off(10),
    )
    assert await stream.trim(keep_last=3) == 7
    kept = await stream.read()
    assert [e.offset for e in kept.events] == [off(8), off(9), off(10)]  # offsets do not change
    assert await stream.delete() is True
    assert await stream.meta() is None
    assert await stream.delete() is False


async def test_a_maximum_length_is_applied_on_append(db: fm.Database) -> None:
    bounded: EventStream[dict[str, Any]] = EventStream("runs/bounded")
    await bounded.create(max_len=3)
    await bounded.append_many([{"n": i} for i in range(5)])
    await bounded.append({"n": 5})
    assert [e.data["n"] for e in (await bounded.read()).events] == [3, 4, 5]


class Log(BaseModel):
    type: str
    message: str


async def test_typed_streams_validate_events(db: fm.Database) -> None:
    logs = EventStream("runs/typed", model=Log)
    await logs.create()
    await logs.append(Log(type="log", message="hi"))
    (event,) = (await logs.read()).events
    assert event.data == Log(type="log", message="hi")
    await EventStream("runs/typed").append({"type": "log"})  # written untyped, no message
    with pytest.raises(fm.CorruptDataError, match="does not match Log"):
        await logs.read()


async def test_each_event_carries_the_server_time_of_its_append(
    db: fm.Database, stream: EventStream[dict[str, Any]]
) -> None:
    before = await db.server_time()
    await stream.append({"n": 0})
    await stream.append_many([{"n": 1}, {"n": 2}])
    after = await db.server_time()
    events = (await stream.read()).events
    stamps = [e.at for e in events]
    assert all(s is not None and before - MS <= s <= after for s in stamps), stamps
    assert stamps[1] == stamps[2]  # one append call, one time
    # An entry written without a time (by hand, or before this field) reads without one;
    # one whose time is not a number is named, not guessed.
    events_key = db.keys.stream(stream.path).events
    await db.client.hset(db.keys.stream(stream.path).meta, "seq", 6)
    await db.client.xadd(events_key, {"d": '{"n": 3}'}, id="0-4")
    await db.client.xadd(events_key, {"d": '{"n": 4}', "t": "soon"}, id="0-5")
    old = (await stream.read(after=off(3), limit=1)).events[0]
    assert (old.data, old.at) == ({"n": 3}, None)
    with pytest.raises(fm.CorruptDataError, match="append time b'soon'"):
        await stream.read(after=off(4))
    await db.client.xadd(events_key, {"d": "{}", "t": "9" * 15}, id="0-6")  # after 9999
    with pytest.raises(fm.CorruptDataError, match="append time b'999"):
        await stream.read(after=off(5))


async def test_tail_yields_existing_events_then_new_ones_and_ends_when_closed(
    stream: EventStream[dict[str, Any]],
) -> None:
    await stream.append({"n": 0})
    seen: list[int] = []
    got_first = asyncio.Event()

    async def follow() -> None:
        async for event in stream.tail(after="-1"):
            seen.append(event.data["n"])
            got_first.set()

    follower = asyncio.create_task(follow())
    await within(got_first.wait(), "the tail's first event")
    await stream.append_many([{"n": 1}, {"n": 2}])
    await stream.close()
    await within(follower, "the tail to end after the close")
    assert seen == [0, 1, 2]


@pytest.mark.standalone  # it finds the blocked tail in CLIENT LIST of the one server
async def test_tailing_a_missing_stream_raises_unless_asked_to_wait(db: fm.Database) -> None:
    missing: EventStream[dict[str, Any]] = EventStream("nope")
    with pytest.raises(fm.StreamNotFoundError, match="'nope' does not exist; nothing to tail"):
        await within(anext(aiter(missing.tail())), "the tail's refusal")
    assert (await missing.read()).exists is False
    seen: list[int] = []

    async def follow() -> None:
        async for event in missing.tail(after="-1", wait_for_stream=True):
            seen.append(event.data["n"])

    follower = asyncio.create_task(follow())
    # The tail reads the stream and blocks; it sees the stream once it is made.
    await poll_until(lambda: _blocked_in_xread(db), "the waiting tail to block in XREAD")
    await missing.create()
    await missing.append({"n": 1})
    await missing.close()
    await within(follower, "the waiting tail to end after the close")
    assert seen == [1]


async def _blocked_in_xread(db: fm.Database) -> bool:
    return any(c.get("cmd") == "xread" for c in await db.client.client_list())


async def test_a_tail_in_another_process_is_woken_by_an_append(
    db: fm.Database, stream: EventStream[dict[str, Any]], redis_url: str
) -> None:
    await stream.append({"n": 0})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    async with child_process(
        sys.executable, str(Path(__file__).parent / "tail_process.py"), redis_url,
        db.keys.prefix, stream.path, stdout=asyncio.subprocess.PIPE, env=env,
    ) as child:  # fmt: skip
        assert child.stdout is not None
        first = await within(child.stdout.readline(), "the child's first event")
        assert json.loads(first)["data"] == {"n": 0}  # it is tailing now
        await stream.append({"n": 1})
        second = json.loads(await within(child.stdout.readline(), "the appended event"))
        assert dt.datetime.fromisoformat(second.pop("at")) <= await db.server_time()
        assert second == {"offset": off(2), "data": {"n": 1}}
        await stream.close()
        assert (await within(child.stdout.readline(), "the child's end")).strip() == b"closed"
        assert await within(child.wait(), "the child to exit") == 0


@pytest.mark.standalone  # it finds the blocked tail in CLIENT LIST of the one server
async def test_cancelling_a_tail_leaves_the_database_usable(
    db: fm.Database, stream: EventStream[dict[str, Any]]
) -> None:

    async def follow() -> None:
        async for _event in stream.tail(after="now"):
            pass

    task = asyncio.create_task(follow())

    async def blocked_in_xread() -> bool:
        return any(c.get("cmd") == "xread" for c in await db.client.client_list())

    # The tail is blocked in XREAD once the server lists a client blocked on it.
    await poll_until(blocked_in_xread, "the tail to block in XREAD")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.client.ping()
    assert await stream.append({"n": 1}) == off(1)
    assert [e.data for e in (await stream.read()).events] == [{"n": 1}]


async def test_tail_many_merges_streams(db: fm.Database) -> None:
    streams: list[EventStream[dict[str, Any]]] = [EventStream(f"runs/m{i}") for i in range(3)]
    for i, s in enumerate(streams):
        await s.create()
        await s.append_many([{"stream": i, "n": n} for n in range(2)])
        await s.close()
    seen = [(path, event.data["n"]) async for path, event in tail_many(streams)]
    assert sorted(seen) == sorted((f"runs/m{i}", n) for i in range(3) for n in range(2))
