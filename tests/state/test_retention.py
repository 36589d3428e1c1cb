"""Retention on a real server: what is pruned, what is kept, bounded batches, racing pruners."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

import flue_models as fm
from flue_models import EventStream, Retention, Submission, WorkflowRun, prune
from tests.command_line import run_cli

DAY = dt.timedelta(days=1)
LONG_AGO = dt.timedelta(days=10)


async def ended_run(run_id: str, ago: dt.timedelta, db: fm.Database) -> WorkflowRun:
    """A finished run whose end is ``ago`` before the server's now, with events and chunks."""
    run = await WorkflowRun.start("wf", run_id=run_id)
    await run.events.append({"n": 1})
    await run.events.append_chunk_segment(0, "partial")
    await run.finish(result={})
    await run.update(ended_at=await db.server_time() - ago)
    return run


async def settled(submission_id: str, kind: str, ago: dt.timedelta, db: fm.Database) -> None:
    """A settled submission whose settle time is ``ago`` before the server's now."""
    if kind == "dispatch":
        await Submission.admit_dispatch(submission_id, session_id="s-1", input={"n": 1})
    else:
        await Submission.admit_direct(submission_id, session_id="s-1", input={})
    attempt = await Submission.claim(submission_id, "w")
    assert attempt is not None
    await Submission.journal_begin(attempt)
    assert await Submission.finish(attempt)
    row = await Submission.get(submission_id)
    assert row is not None
    await row.update(settled_at=await db.server_time() - ago)


async def age_member(db: fm.Database, key: str, member: str, ago: dt.timedelta) -> None:
    """Move a member of one of the time-scored sets ``ago`` into the past."""
    when = await db.server_time() - ago
    assert await db.client.zadd(key, {member: int(when.timestamp() * 1000)}, xx=True, ch=True)


async def test_ended_runs_are_pruned_with_their_streams_and_the_rest_is_kept(
    db: fm.Database,
) -> None:
    old = await ended_run("r-old", LONG_AGO, db)
    await ended_run("r-new", dt.timedelta(hours=1), db)
    active = await WorkflowRun.start("wf", run_id="r-active")
    report = await prune(Retention(ended_runs=DAY))
    assert report.counts == {"ended_runs": 1}
    assert not report.more
    assert await WorkflowRun.get("r-old") is None
    assert await old.events.meta() is None
    assert await old.events.chunk_segments() == []
    assert await WorkflowRun.get("r-new") is not None
    assert (await WorkflowRun.get(active.id)) is not None
    assert [p.id for p in (await WorkflowRun.list()).items] == ["r-active", "r-new"]
    assert (await fm.verify_collection(WorkflowRun)).ok
    assert (await prune(Retention(ended_runs=DAY))).counts == {"ended_runs": 0}


async def test_settled_submissions_go_with_their_journals_and_dispatches_leave_a_receipt(
    db: fm.Database,
) -> None:
    await settled("d-old", "dispatch", LONG_AGO, db)
    await settled("p-old", "direct", LONG_AGO, db)
    await settled("p-new", "direct", dt.timedelta(hours=1), db)
    await Submission.admit_direct("p-queued", session_id="s-2", input={})
    report = await prune(Retention(settled_submissions=DAY))
    assert report.counts == {"settled_submissions": 2}
    for gone in ("d-old", "p-old"):
        assert await Submission.get(gone) is None
        assert not await db.client.exists(db.keys.journal(gone, "s-1"))
    assert await Submission.get("p-new") is not None
    assert await Submission.get("p-queued") is not None
    replay = await Submission.admit_dispatch("d-old", session_id="s-1", input={"n": 1})
    assert (replay.created, replay.receipt is not None) == (False, True)  # not run again
    assert (await fm.verify_collection(Submission)).ok


async def test_receipts_are_pruned_by_age(db: fm.Database) -> None:
    for i in range(3):
        await settled(f"d-{i}", "dispatch", LONG_AGO, db)
    await prune(Retention(settled_submissions=DAY))
    for aged in ("d-0", "d-1"):  # each in the receipt times of its id's bucket
        await age_member(db, db.keys.receipt(aged).times, aged, LONG_AGO)
    assert (await prune(Retention(receipts=DAY))).counts == {"receipts": 2}
    assert not await db.client.exists(db.keys.receipt("d-0").receipt)
    kept = await Submission.admit_dispatch("d-2", session_id="s-1", input={"n": 1})
    assert kept.receipt is not None
    fresh = await Submission.admit_dispatch("d-0", session_id="s-1", input={"n": 1})
    assert fresh.created  # its receipt was pruned: the id is new again (documented)


async def test_closed_streams_and_attempt_markers_are_pruned_by_age(db: fm.Database) -> None:
    for path in ("agents/old", "agents/new", "agents/open"):
        await EventStream(path).create()
    await EventStream("agents/old").close()
    await EventStream("agents/new").close()
    await age_member(db, db.keys.closed_streams(), "agents/old", LONG_AGO)
    meta = db.keys.stream("agents/old").meta
    when = await db.server_time() - LONG_AGO
    await db.client.hset(meta, "closed_ms", int(when.timestamp() * 1000))
    await Submission.insert_attempt_marker("p-1", "a-old")
    await Submission.insert_attempt_marker("p-1", "a-new")
    markers = db.keys.attempt_markers()
    await age_member(db, markers, '["p-1","a-old"]', LONG_AGO)
    report = await prune(Retention(closed_streams=DAY, attempt_markers=DAY))
    assert report.counts == {"closed_streams": 1, "attempt_markers": 1}
    assert await EventStream("agents/old").meta() is None
    assert await EventStream("agents/new").meta() is not None
    assert await EventStream("agents/open").meta() is not None
    left = [m.attempt_id for m in await Submission.list_attempt_markers()]
    assert left == ["a-new"]


async def test_a_stale_closed_entry_is_dropped_not_obeyed(db: fm.Database) -> None:
    await EventStream("agents/a").create()
    await db.client.zadd(db.keys.closed_streams(), {"agents/a": 1})  # says closed in 1970
    report = await prune(Retention(closed_streams=DAY))
    assert report.counts == {"closed_streams": 0}
    assert await EventStream("agents/a").meta() is not None  # the stream is the truth
    assert await db.client.zscore(db.keys.closed_streams(), "agents/a") is None


async def test_pruning_is_bounded_per_call_and_a_dry_run_counts_without_removing(
    db: fm.Database,
) -> None:
    for i in range(5):
        await ended_run(f"r-{i}", LONG_AGO, db)
    policy = Retention(ended_runs=DAY)
    dry = await prune(policy, dry_run=True)
    assert (dry.counts, dry.dry_run) == ({"ended_runs": 5}, True)
    assert len((await WorkflowRun.list()).items) == 5
    first = await prune(policy, limit=2)
    assert (first.counts, first.more) == ({"ended_runs": 2}, True)
    total = 2
    while (report := await prune(policy, limit=2)).more:
        total += report.counts["ended_runs"]
    total += report.counts["ended_runs"]
    assert total == 5
    assert (await WorkflowRun.list()).items == []


async def test_racing_pruners_remove_and_count_each_item_once(
    db: fm.Database, redis_url: str, protocol: int
) -> None:
    for i in range(12):
        await ended_run(f"r-{i}", LONG_AGO, db)
        await settled(f"p-{i}", "dispatch", LONG_AGO, db)
    policy = Retention(ended_runs=DAY, settled_submissions=DAY)
    others = [
        await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol) for _ in range(3)
    ]
    try:

        async def drain(other: fm.Database) -> dict[str, int]:
            counts = {"ended_runs": 0, "settled_submissions": 0}
            while True:
                report = await prune(policy, limit=3, db=other)
                for kind, count in report.counts.items():
                    counts[kind] += count
                if not report.more:
                    return counts

        results = await asyncio.wait_for(asyncio.gather(*(drain(o) for o in others)), 60)
    finally:
        for other in reversed(others):  # each hands the task back to the one before it
            await other.close()
    assert sum(r["ended_runs"] for r in results) == 12
    assert sum(r["settled_submissions"] for r in results) == 12
    assert (await fm.verify_collection(WorkflowRun)).ok
    assert (await fm.verify_collection(Submission)).ok
    receipts = db.keys.every_submission_bucket("receipt_times")
    assert sum([await db.client.zcard(key) for key in receipts]) == 12


@pytest.mark.parametrize(
    "bad", [dt.timedelta(0), dt.timedelta(seconds=-1), 30], ids=["zero", "negative", "int"]
)
def test_a_retention_age_is_a_positive_timedelta(bad: object) -> None:
    with pytest.raises(fm.ConfigurationError, match="ended_runs"):
        Retention(ended_runs=bad)  # type: ignore[arg-type]


async def test_an_age_older_than_the_calendar_prunes_nothing(db: fm.Database) -> None:
    await ended_run("r-1", LONG_AGO, db)
    report = await prune(Retention(ended_runs=dt.timedelta.max))
    assert report.counts == {"ended_runs": 0}
    assert await WorkflowRun.get("r-1") is not None


async def test_a_journal_detail_that_is_not_json_is_refused(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    await Submission.journal_begin(attempt)
    with pytest.raises(fm.ConfigurationError, match="not JSON"):
        await Submission.journal_phase(attempt, "provider_started", {1, 2})
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert journal.phase == "before_provider"


async def test_a_prune_limit_is_positive(db: fm.Database) -> None:
    with pytest.raises(fm.ConfigurationError, match="limit"):
        await prune(Retention(receipts=DAY), limit=0)


async def test_the_prune_command(db: fm.Database, redis_url: str) -> None:
    for i in range(3):
        await ended_run(f"r-{i}", LONG_AGO, db)
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    dry = await asyncio.to_thread(run_cli, "prune", *common, "--runs", "1d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "runs: 3 due"
    done = await asyncio.to_thread(
        run_cli, "prune", *common, "--runs", "24h", "--limit", "2", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"counts": {"ended_runs": 3}, "dry_run": False, "more": []}
    assert (await WorkflowRun.list()).items == []
    nothing = await asyncio.to_thread(run_cli, "prune", *common)
    assert nothing.returncode == 2
    assert nothing.stderr.startswith("error: nothing to prune")
    for age in ("soon", "0d", "-1d", "1e999d", "9" * 400 + "d"):
        bad = await asyncio.to_thread(run_cli, "prune", *common, f"--runs={age}")
        assert bad.returncode == 2, age
        assert "give a positive age" in bad.stderr
        assert "Traceback" not in bad.stderr
