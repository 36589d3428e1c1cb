"""Migration 0006_run_buckets: the runs of a store at version 5 (every run in bucket 0)
move into the bucket of their id, counted; other clients are refused when runs move;
``down`` gathers them back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import flue_models as fm
from flue_models import WorkflowRun
from flue_models.keys import bucket_of
from flue_models.model.buckets import bucket_field, check_collections, stored_buckets
from flue_models.schema import migrate
from flue_models.state.integrity import verify_state
from flue_models.state.run import RUN_BUCKETS
from tests.conftest import BUILTIN_MIGRATIONS
from tests.migrations.layouts import (
    declaring,
    refused_for_another_client,
    remove_prefix,
    unmigrated,
)

#: It and the built-in files after it.
FROM_0006 = BUILTIN_MIGRATIONS[5:]
SPEC = WorkflowRun.__flue_spec__
#: The runs move between slots: a standalone server only (a cluster refuses the move).
pytestmark = pytest.mark.standalone


async def runs_in_one_bucket(db: fm.Database, count: int = 60) -> list[str]:
    """Runs written the way version 5 wrote them (one bucket), the store set back to 5."""
    ids = []
    with declaring(WorkflowRun, 1):
        for n in range(count):
            run = await WorkflowRun.start(("a", "b")[n % 2], run_id=f"r-{n}", db=db)
            if n % 3 == 0:
                await run.finish(result={"n": n}, db=db)
            ids.append(run.id)
    await db.client.hset(db.keys.meta, "schema_version", "5")
    await db.client.hdel(
        db.keys.meta,
        *(f"applied:flue:{label[5:9]}" for label in FROM_0006),
        bucket_field("workflow_run"),
        bucket_field("session"),
    )
    return ids


@pytest.fixture
async def version_5(redis_url: str, key_prefix: str) -> AsyncIterator[list[str]]:
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        ids = await runs_in_one_bucket(db)
    yield ids
    await remove_prefix(redis_url, key_prefix)


async def test_0006_moves_each_run_into_the_bucket_of_its_id(
    redis_url: str, key_prefix: str, version_5: list[str]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        zero = db.keys.in_bucket(0)
        assert await db.client.zcard(zero.all("workflow_run")) == 60
        with pytest.raises(fm.BucketCountError, match="flue-models migrate"):
            await check_collections(db, [SPEC])
        applied = await migrate(db)
        assert [s.file.label for s in applied] == FROM_0006
        assert (await stored_buckets(db))["workflow_run"] == RUN_BUCKETS
        for run_id in version_5:
            home = db.keys.in_bucket(bucket_of(run_id, RUN_BUCKETS))
            assert await db.client.exists(home.record("workflow_run", run_id)) == 1
        sizes = [
            await db.client.zcard(db.keys.in_bucket(b).all("workflow_run"))
            for b in range(RUN_BUCKETS)
        ]
        assert sum(sizes) == 60
        assert sum(1 for size in sizes if size) > 8  # spread, not piled up
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        listed = await WorkflowRun.list(limit=1000)
        assert sorted(r.id for r in listed.items) == sorted(version_5)
        assert (await WorkflowRun.counts())["completed"] == 20
        ended = await WorkflowRun.list(status="completed", workflow="a", limit=1000)
        assert sorted(r.id for r in ended.items) == sorted(
            f"r-{n}" for n in range(60) if n % 3 == 0 and n % 2 == 0
        )
        report = await verify_state([WorkflowRun])
        assert report.ok, report
        newer = await WorkflowRun.start("a")
        stored = await WorkflowRun.get("r-5")
        assert stored is not None
        assert newer.version > stored.version  # the seeded counters go on


async def test_0006_refuses_while_another_client_uses_the_prefix_and_moves_nothing(
    redis_url: str, key_prefix: str, version_5: list[str]
) -> None:
    async with refused_for_another_client(redis_url, key_prefix) as other:
        zero = other.keys.in_bucket(0)
        assert await other.client.zcard(zero.all("workflow_run")) == 60


async def test_0006_down_gathers_the_runs_back_into_one_bucket(
    redis_url: str, key_prefix: str, version_5: list[str]
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        await migrate(db)
        reverted = await migrate(db, to=5)
        assert [(s.file.label, s.direction) for s in reverted] == [
            (label, "down") for label in reversed(FROM_0006)
        ]
        assert "workflow_run" not in await stored_buckets(db)
        zero = db.keys.in_bucket(0)
        assert await db.client.zcard(zero.all("workflow_run")) == 60
        db.checked_buckets.clear()
        with pytest.raises(fm.BucketCountError):  # this version's runs need 0006 again
            await WorkflowRun.list()


async def test_a_fresh_store_records_the_run_buckets_and_writes_no_run_key(
    db: fm.Database,
) -> None:
    assert (await stored_buckets(db))["workflow_run"] == RUN_BUCKETS
    found = [k async for k in db.client.scan_iter(match=db.keys.buckets_pattern("workflow_run"))]
    assert found == []
