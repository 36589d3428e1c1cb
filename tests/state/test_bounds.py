"""Every cursor and position argument is checked and bounded: a clear error for what is not
one, and a page costs O(page) whatever the cursor says."""

from __future__ import annotations

import asyncio

import pytest

import flue_models as fm
from flue_models import EventStream, Session
from tests.integration.models import Ticket
from tests.pausing import recorded
from tests.web.conftest import client_for


async def long_session(entries: int) -> None:
    session = await Session.open("s-1")
    batch = [
        fm.MessageEntry(id=f"m{n}", role="user", content="x", parent_id=f"m{n - 1}" if n else None)
        for n in range(entries)
    ]
    for start in range(0, entries, 500):
        await session.append_many(batch[start : start + 500])


def elements_asked(commands: list[tuple[object, ...]]) -> int:
    """How many list elements the LRANGEs among ``commands`` asked for."""
    total = 0
    for command in commands:
        if command[0] == "LRANGE":
            first, last = int(str(command[2])), int(str(command[3]))
            total += last - first + 1
    return total


@pytest.mark.parametrize("before", ["99999999999999999999999999", "garbage", "-3", "", "1e3", "١٢"])
async def test_a_history_cursor_that_is_not_one_is_a_clear_error(
    db: fm.Database, before: str
) -> None:
    await long_session(3)
    with pytest.raises(fm.ConfigurationError, match=r"not a Session\.history cursor"):
        await Session.history("s-1", before=before)


async def test_a_history_cursor_past_the_end_reads_one_page(db: fm.Database) -> None:
    await long_session(2_000)
    async with recorded(db) as seen:
        page = await Session.history("s-1", before="1000000", limit=20)
    assert page is not None
    assert [e.id for e in page.entries] == [f"m{n}" for n in range(1980, 2000)]
    assert elements_asked(seen) <= 40  # O(page), not the 2,000 entries


async def test_the_dashboard_answers_400_for_a_bad_history_cursor(db: fm.Database) -> None:
    await long_session(3)
    async with client_for(db) as web:
        for before in ("garbage", "-3", "99999999999999999999999999"):
            api = await web.get("/api/session", params={"id": "s-1", "before": before})
            assert api.status_code == 400, (before, api.text)
            assert api.json()["error"]["type"] == "ConfigurationError"
            page = await web.get("/session", params={"id": "s-1", "before": before})
            assert page.status_code == 400, (before, page.text[:200])


@pytest.mark.parametrize(
    "offset",
    ["0000000000000000_99999999999999999999", "x_1", "0000000000000001_0000000000000000", "_"],
)
async def test_an_offset_that_is_not_one_is_a_clear_error(db: fm.Database, offset: str) -> None:
    stream: EventStream[dict[str, int]] = EventStream("agents/a")
    await stream.create()
    await stream.append({"n": 1})
    with pytest.raises(fm.ConfigurationError, match="Malformed offset"):
        await stream.read(after=offset)


@pytest.mark.parametrize("cursor", ["gQ", "eyJzIjoibmFuIiwiaSI6IngiLCJxIjoiYSJ9", "W10", "!!"])
async def test_a_query_cursor_that_is_not_one_shows_no_internals(
    db: fm.Database, cursor: str
) -> None:
    await Ticket(id="t-1", status="open", priority=1).save()
    with pytest.raises(fm.QueryError, match="not one this library made") as refused:
        await Ticket.find().page(limit=10, cursor=cursor)
    assert "codec" not in str(refused.value)
    assert "KeyError" not in str(refused.value)


async def test_updates_go_on_while_another_client_flushes_the_script_cache(
    db: fm.Database,
) -> None:
    ticket = await Ticket(id="t-1", status="open", priority=0).save()
    stop = asyncio.Event()

    async def flusher() -> None:
        while not stop.is_set():
            await db.client.execute_command("SCRIPT", "FLUSH")
            await asyncio.sleep(0)

    flushing = asyncio.create_task(flusher())
    try:
        for n in range(1, 301):
            await ticket.update(priority=n)  # never a raw NoScriptError
    finally:
        stop.set()
        await flushing
    stored = await Ticket.get("t-1")
    assert stored is not None
    assert stored.priority == 300
