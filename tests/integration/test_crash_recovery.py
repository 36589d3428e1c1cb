"""Kill the server (SIGKILL, AOF with appendfsync always) and the client mid-write:
no acknowledged write is lost and no index drifts from its rows.

Each test runs ``FLUE_SOAK_CYCLES`` cycles (5 by default, as in CI; set it to 50 or more
for a soak). A kill is triggered by a count of acknowledged writes, never by a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.exceptions import RedisError

import flue_models as fm
from flue_models.state.submission import Submission
from tests.command_line import ROOT
from tests.conftest import RedisProcess, RedisServers
from tests.integration.models import Ticket
from tests.waiting import child_process, within

CYCLES = int(os.environ.get("FLUE_SOAK_CYCLES", "5"))
#: Errors a writer sees when the server dies under it.
GONE = (RedisError, fm.FlueModelsError, OSError)


@dataclass
class Acknowledged:
    """Every write the server acknowledged, as the writers saw it."""

    tickets: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> version, status
    events: dict[str, list[str]] = field(default_factory=dict)  # path -> offsets
    submissions: set[str] = field(default_factory=set)

    def count(self) -> int:
        return len(self.tickets) + sum(map(len, self.events.values())) + len(self.submissions)


async def check_nothing_lost(db: fm.Database, acked: Acknowledged) -> None:
    stored = await Ticket.using(db).get_many(sorted(acked.tickets))
    for ticket_id, ticket in zip(sorted(acked.tickets), stored, strict=True):
        version, status = acked.tickets[ticket_id]
        assert ticket is not None, f"acknowledged ticket {ticket_id} was lost"
        assert ticket.version >= version, ticket_id
        if ticket.version == version:
            assert ticket.status == status, ticket_id
    for path, offsets in acked.events.items():
        stream: fm.EventStream[dict[str, int]] = fm.EventStream(path, db=db)
        found = [e.offset for e in (await stream.read(limit=1000)).events]
        assert found[: len(offsets)] == offsets, f"acknowledged events of {path} were lost"
    for submission_id in acked.submissions:
        assert await Submission.get(submission_id, db=db) is not None, submission_id
    for model in (Ticket, Submission):
        report = await fm.verify_collection(model, db=db)
        assert report.ok, report.drift[:5]


async def write_until_killed(
    db: fm.Database, server: RedisProcess, cycle: int, acked: Acknowledged, threshold: int
) -> None:
    """Run three kinds of writers; SIGKILL the server once ``threshold`` writes are acked."""
    enough = asyncio.Event()

    def note() -> None:
        if acked.count() >= threshold:
            enough.set()

    async def tickets() -> None:
        n = 0
        while True:
            ticket = await Ticket.using(db).create(id=f"c{cycle}-{n}", status="open", priority=1)
            acked.tickets[ticket.id] = (ticket.version, "open")
            note()
            await ticket.update(status="closed")
            acked.tickets[ticket.id] = (ticket.version, "closed")
            note()
            n += 1

    async def events() -> None:
        stream: fm.EventStream[dict[str, int]] = fm.EventStream(f"runs/{cycle}", db=db)
        await stream.create()
        offsets = acked.events.setdefault(stream.path, [])
        n = 0
        while True:
            offsets.append(await stream.append({"n": n}))
            note()
            n += 1

    async def submissions() -> None:
        n = 0
        while True:
            row = await Submission.admit_direct(
                f"c{cycle}-s{n}", session_id=f"s{n % 4}", input={"n": n}, db=db
            )
            acked.submissions.add(row.id)
            note()
            n += 1

    async def until_the_server_dies(work: asyncio.Task[None]) -> None:
        with contextlib.suppress(*GONE):  # what it saw acknowledged is recorded
            await work

    writers = [asyncio.create_task(w()) for w in (tickets, events, submissions)]
    await within(enough.wait(), "enough acknowledged writes")
    server.kill()  # SIGKILL in the middle of the writers
    await within(
        asyncio.gather(*(until_the_server_dies(w) for w in writers)), "the writers to see it"
    )


async def test_server_kills_lose_no_acknowledged_write(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    server = redis_servers.start("--appendfsync", "always")
    acked = Acknowledged()
    rng = random.Random(12)
    try:
        for cycle in range(CYCLES):
            db = await fm.connect(server.url, key_prefix=key_prefix)
            threshold = acked.count() + rng.randint(50, 400)
            await write_until_killed(db, server, cycle, acked, threshold)
            await db.close()
            server.start()  # same port, same AOF
            async with fm.connect(server.url, key_prefix=key_prefix) as after:
                await check_nothing_lost(after, acked)
    finally:
        server.kill()
    print(f"server kills: {CYCLES} cycles, {acked.count()} acknowledged writes, 0 lost, 0 drift")


async def test_client_kills_leave_no_partial_write(
    redis_url: str, key_prefix: str, db: fm.Database
) -> None:
    rng = random.Random(7)
    acked = Acknowledged()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writer = Path(__file__).parent / "crash_writer.py"
    for cycle in range(CYCLES):
        async with child_process(
            sys.executable, str(writer), redis_url, key_prefix, f"k{cycle}",
            stdout=asyncio.subprocess.PIPE, env=env,
        ) as child:  # fmt: skip
            assert child.stdout is not None
            for _ in range(rng.randint(20, 200)):
                kind, name, *rest = (
                    (await within(child.stdout.readline(), "the writer's next ack"))
                    .decode()
                    .split()
                )
                if kind == "ticket":
                    acked.tickets[name] = (int(rest[0]), rest[1])
                else:
                    acked.events.setdefault(name, []).append(rest[0])
            child.send_signal(signal.SIGKILL)  # mid-write, whatever it was doing
            await within(child.wait(), "the writer to die")
        await check_nothing_lost(db, acked)
    print(f"client kills: {CYCLES} cycles, {acked.count()} acknowledged writes, 0 lost, 0 drift")


@pytest.fixture
def protocol() -> int:
    """One protocol: the kills test durability, not reply shapes."""
    return 3
