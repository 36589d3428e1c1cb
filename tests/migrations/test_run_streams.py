"""Migration 0008_run_streams: each run's event stream moves between a slot of its own
and its run's bucket, every key counted, events and idempotency keys intact; refused
while another client is connected or when a key it would move to exists."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import flue_models as fm
from flue_models import EventStream, WorkflowRun
from flue_models.errors import MigrationFailedError
from flue_models.schema import migrate
from flue_models.slots import slot_of
from flue_models.state.events import chunks_key, stream_keys
from flue_models.state.integrity import verify_state
from tests.conftest import BUILTIN_MIGRATIONS
from tests.migrations.layouts import refused_for_another_client, remove_prefix, unmigrated

RUN_STREAMS_FILE = "flue/0008_run_streams"
SPEC = WorkflowRun.__flue_spec__
#: The streams move between slots: a standalone server only (a cluster refuses the move).
pytestmark = pytest.mark.standalone


def run_key(db: fm.Database, run_id: str) -> str:
    return SPEC.record_key(db.keys, run_id)


async def all_keys(db: fm.Database) -> list[str]:
    return sorted([k.decode() async for k in db.client.scan_iter(match=db.keys.pattern())])


@pytest.fixture
async def version_7(redis_url: str, key_prefix: str) -> AsyncIterator[list[str]]:
    """Runs (every third ended), each stream with events, an idempotency key and a chunk,
    a stream that is not a run's, and the store moved back to version 7."""
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        ids = []
        for n in range(12):
            run = await WorkflowRun.start("w", run_id=f"r-{n}")
            await run.events.append({"n": n})
            await run.events.append_once(f"k-{n}", {"once": n})
            await run.events.append_chunk_segment(0, f"chunk {n}")
            if n % 3 == 0:
                await run.finish(result=n)
            ids.append(run.id)
        await EventStream("agents/a-1").create()
        applied = await migrate(db, to=7)
        undone = [(label, "down") for label in reversed(BUILTIN_MIGRATIONS[7:])]
        assert [(s.file.label, s.direction) for s in applied] == undone
        assert undone[-1] == (RUN_STREAMS_FILE, "down")
    yield ids
    await remove_prefix(redis_url, key_prefix)


async def test_0008_moves_each_run_stream_into_its_runs_slot_and_nothing_is_lost(
    redis_url: str, key_prefix: str, version_7: list[str]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        before = await all_keys(db)
        own = [db.keys.stream(WorkflowRun.stream_path(i)).events for i in version_7]
        assert all(key in before for key in own)  # version 7: a slot of its own
        applied = await migrate(db)
        assert [s.file.label for s in applied] == BUILTIN_MIGRATIONS[7:]
        after = await all_keys(db)
        assert len(after) == len(before)  # counted: one key for each key
        for run_id in version_7:
            path = WorkflowRun.stream_path(run_id)
            keys = [*stream_keys(db.keys, path), chunks_key(db.keys, path)]
            assert {slot_of(k) for k in keys} == {slot_of(run_key(db, run_id))}
            assert await db.client.exists(*keys) == 4
        assert db.keys.stream("agents/a-1").meta in after  # not a run's: it stays
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        report = await verify_state()
        assert report.ok, report.all_drift
        assert report.streams == 13  # the runs' streams in their buckets are found too
        run = await WorkflowRun.get("r-1")
        assert run is not None
        assert [e.data for e in (await run.events.read()).events] == [{"n": 1}, {"once": 1}]
        offsets = [e.offset for e in (await run.events.read()).events]
        assert await run.events.append_once("k-1", {"once": 1}) == offsets[1]  # a replay
        assert [c.body for c in await run.events.chunk_segments()] == ["chunk 1"]
        await run.finish(result=1)
        assert (await run.events.meta()).closed  # type: ignore[union-attr]
        ended = await WorkflowRun.get("r-0")
        assert ended is not None
        assert (await ended.events.meta()).closed  # type: ignore[union-attr]


async def test_0008_refuses_while_another_client_uses_the_prefix_and_moves_nothing(
    redis_url: str, key_prefix: str, version_7: list[str]
) -> None:
    async with refused_for_another_client(redis_url, key_prefix) as other:
        own = other.keys.stream(WorkflowRun.stream_path(version_7[0])).events
        assert await other.client.exists(own) == 1


async def test_0008_refuses_a_key_in_the_way_before_moving_anything(
    redis_url: str, key_prefix: str, version_7: list[str]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        in_the_way = stream_keys(db.keys, WorkflowRun.stream_path(version_7[5])).once
        await db.client.hset(in_the_way, "x", "y")
        before = await all_keys(db)
        with pytest.raises(MigrationFailedError, match="0008") as failed:
            await migrate(db)
        assert in_the_way in str(failed.value.__cause__)
        assert await all_keys(db) == before
