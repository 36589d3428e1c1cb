"""One rule for every listing's ``limit`` (Flue's): none, zero or less is 100, more than
1000 is 1000, anything but a whole number is refused. Queries, runs, sessions, session
histories, event reads, the command line and the dashboard's API all follow it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import flue_models as fm
from flue_models import EventStream, MessageEntry, Session, WorkflowRun
from flue_models.model.query import DEFAULT_PAGE, MAX_PAGE, page_size
from tests.command_line import run_cli
from tests.integration.models import Ticket
from tests.web.conftest import client_for

#: More than a default page of each kind of item.
STORED = DEFAULT_PAGE + 20


@pytest.fixture
def protocol() -> int:
    """The rule is the library's, not the protocol's: one pass is enough."""
    return 3


def test_the_rule() -> None:
    assert [page_size(x) for x in (None, 0, -5, 1, 7, MAX_PAGE, MAX_PAGE + 1, 10**9)] == [
        DEFAULT_PAGE, DEFAULT_PAGE, DEFAULT_PAGE, 1, 7, MAX_PAGE, MAX_PAGE, MAX_PAGE,
    ]  # fmt: skip
    for wrong in (True, 2.0, "5"):
        with pytest.raises(fm.ConfigurationError, match="whole number"):
            page_size(wrong)  # type: ignore[arg-type]


async def fill() -> None:
    await Ticket.save_many([Ticket(status="open", priority=i) for i in range(STORED)])
    for i in range(STORED):
        await WorkflowRun.start("wf", run_id=f"r-{i:03d}")
    for i in range(STORED - 1):  # one at a time: a cluster client's pool does not wait
        await Session.open(f"s-{i:03d}")  # (+ "long" below)
    session = await Session.open("long")
    parent = None
    for i in range(STORED):
        await session.append(MessageEntry(id=f"m{i}", parent_id=parent, role="user", content="x"))
        parent = f"m{i}"
    stream: EventStream[dict[str, Any]] = EventStream("agents/a")
    await stream.create()
    await stream.append_many([{"n": i} for i in range(STORED)])


async def sizes(limit: Any) -> dict[str, int]:
    """How many items each library listing returns for ``limit``."""
    history = await Session.history("long", limit=limit)
    assert history is not None
    listings: dict[str, Callable[[], Awaitable[int]]] = {
        "query page": lambda: _len(Ticket.find().page(limit=limit)),
        "query id_page": lambda: _ids(Ticket.find().id_page(limit=limit)),
        "runs": lambda: _len(WorkflowRun.list(limit=limit)),
        "sessions": lambda: _len(Session.list(limit=limit)),
        "events": lambda: _events(EventStream("agents/a").read(after="-1", limit=limit)),
    }
    found = {name: await count() for name, count in listings.items()}
    found["history"] = len(history.entries)
    return found


async def _len(page: Awaitable[Any]) -> int:
    return len((await page).items)


async def _ids(page: Awaitable[Any]) -> int:
    return len((await page).ids)


async def _events(read: Awaitable[Any]) -> int:
    return len((await read).events)


async def test_every_listing_follows_the_rule(db: fm.Database, redis_url: str) -> None:
    await fill()
    every = {"query page", "query id_page", "runs", "sessions", "events", "history"}
    for limit in (None, 0, -5):
        assert await sizes(limit) == dict.fromkeys(every, DEFAULT_PAGE), limit
    assert await sizes(7) == dict.fromkeys(every, 7)
    assert await sizes(MAX_PAGE + 1) == dict.fromkeys(every, STORED)  # all there is
    for listing in (
        lambda: Ticket.find().page(limit="5"),  # type: ignore[arg-type]
        lambda: WorkflowRun.list(limit=2.5),  # type: ignore[arg-type]
        lambda: EventStream("agents/a").read(limit=True),
    ):
        with pytest.raises(fm.ConfigurationError, match="whole number"):
            await listing()

    # The command line and the dashboard read --limit / ?limit= by the same rule.
    common = ["--url", redis_url, "--prefix", db.keys.prefix, "--json"]
    for given, expected in ((None, DEFAULT_PAGE), ("0", DEFAULT_PAGE), ("3", 3)):
        extra = [] if given is None else ["--limit", given]
        for command in (["runs", "list"], ["sessions", "list"], ["submissions", "list"]):
            done = await asyncio.to_thread(run_cli, *command, *common, *extra)
            assert done.returncode == 0, done.stderr
            items = json.loads(done.stdout)["items"]
            if command[0] != "submissions":  # none stored: the rule, not the count
                assert len(items) == expected, (command, given)
        read = await asyncio.to_thread(run_cli, "events", "read", "agents/a", *common, *extra)
        assert len(json.loads(read.stdout)["events"]) == expected, given
    for command in (["runs", "list"], ["events", "read", "agents/a"]):  # a negative: a typo
        refused = await asyncio.to_thread(run_cli, *command, *common, "--limit", "-1")
        assert refused.returncode == 2, refused.stderr
    async with client_for(db) as web:
        for given, expected in (("", DEFAULT_PAGE), ("0", DEFAULT_PAGE), ("4", 4)):
            runs = (await web.get("/api/runs", params={"limit": given})).json()
            assert len(runs["items"]) == expected, given
