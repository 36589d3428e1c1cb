"""No decision crosses a call unguarded (DESIGN.md, invariant 15): each library call that
reads, decides and then writes in another call is paused between the two (as a slow
network or a GC pause would) while another client changes what it read; the write must
see the change, not undo it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

import flue_models as fm
from flue_models import EventStream, Retention, Session, Submission, WorkflowRun, prune
from flue_models.state.integrity import verify_state
from tests.command_line import run_cli
from tests.integration.models import Ticket
from tests.pausing import command, either, paused_before, script
from tests.waiting import poll_until

DAY = dt.timedelta(days=1)
LONG_AGO = dt.timedelta(days=10)


async def closed_long_ago(db: fm.Database, path: str) -> None:
    """A stream closed ten days ago by the server's clock (its metadata and its entry)."""
    stream: EventStream[dict[str, int]] = EventStream(path)
    await stream.create()
    await stream.append({"n": 1})
    await stream.close()
    when = int((await db.server_time() - LONG_AGO).timestamp() * 1000)
    await db.client.hset(db.keys.stream(path).meta, "closed_ms", when)
    await db.client.zadd(db.keys.closed_streams(), {path: when}, xx=True)


async def test_pruning_a_closed_stream_keeps_one_made_again_at_its_path(db: fm.Database) -> None:
    await closed_long_ago(db, "agents/old")

    async def made_again() -> None:  # deleted and created again, then closed: it is new
        again: EventStream[dict[str, int]] = EventStream("agents/old")
        await again.delete()
        await again.create()
        await again.append({"n": 2})
        await again.close()

    async with paused_before(db, either(script("stream_drop"), command("DEL")), made_again):
        report = await prune(Retention(closed_streams=DAY))
    assert report.counts == {"closed_streams": 0}
    kept = await EventStream("agents/old").read()
    assert [e.data for e in kept.events] == [{"n": 2}]
    assert await db.client.zscore(db.keys.closed_streams(), "agents/old") is not None


async def test_pruning_a_closed_stream_keeps_one_made_again_open(db: fm.Database) -> None:
    await closed_long_ago(db, "agents/old")

    async def made_again() -> None:
        again: EventStream[dict[str, int]] = EventStream("agents/old")
        await again.delete()
        await again.create()

    async with paused_before(db, either(script("stream_drop"), command("DEL")), made_again):
        await prune(Retention(closed_streams=DAY))
    info = await EventStream("agents/old").meta()
    assert info is not None
    assert not info.closed


async def test_pruning_a_run_keeps_the_stream_of_a_run_started_again_under_its_id(
    db: fm.Database,
) -> None:
    run = await WorkflowRun.start("wf", run_id="r-1")
    await run.finish(result={})
    await run.update(ended_at=await db.server_time() - LONG_AGO)

    async def pruned_and_started_again() -> None:
        assert await WorkflowRun.delete_id("r-1")
        await WorkflowRun.start("wf", run_id="r-1")

    before_the_delete = either(command("ZSCORE"), command("DEL"))
    async with paused_before(db, before_the_delete, pruned_and_started_again):
        report = await prune(Retention(ended_runs=DAY))
    assert report.counts == {"ended_runs": 0}
    again = await WorkflowRun.get("r-1")
    assert again is not None
    assert again.status == "active"
    assert await again.events.append({"n": 1})  # its stream is there, and open


async def test_deleting_a_run_deletes_its_stream_in_the_same_call(db: fm.Database) -> None:
    run = await WorkflowRun.start("wf", run_id="r-1")
    await run.events.append({"n": 1})
    await run.events.append_chunk_segment(0, "partial")
    await run.finish()
    assert await run.delete()
    assert await EventStream("runs/r-1").meta() is None
    assert not await db.client.exists(*db.keys.stream("runs/r-1"))


async def test_repairing_a_sessions_index_keeps_the_score_of_an_append_meanwhile(
    db: fm.Database,
) -> None:
    session = await Session.open("s-1")
    await session.append(fm.MessageEntry(id="m1", role="user", content="hi"))
    all_key = Session.__flue_spec__.keys_of(db.keys, "s-1").all("session")
    await db.client.zrem(all_key, "s-1")  # a missing entry: verify --repair puts it back
    report = await verify_state((Session,))
    assert [d.kind for d in report.all_drift] == ["missing"]

    async def appended() -> None:  # rescores the entry: appends do not take the version
        again = await Session.get("s-1")
        assert again is not None
        await again.append(fm.MessageEntry(id="m2", role="user", content="more"))

    async with paused_before(db, either(script("index_restore"), script("save")), appended):
        repaired = await verify_state((Session,), repair=True)
    assert repaired.ok, repaired.all_drift
    row = await Session.get("s-1")
    assert row is not None
    score = await db.client.zscore(all_key, "s-1")
    assert score == Session.__flue_spec__.order_score({"updated_at": row.updated_at})


async def test_repair_meets_a_value_another_record_holds_repairs_the_rest_and_reports_it(
    db: fm.Database, redis_url: str
) -> None:
    await Ticket(id="t-1", status="open", priority=1, email="a@x").save()
    await Ticket(id="t-2", status="open", priority=2, email="b@x").save()
    await Ticket(id="t-3", status="open", priority=3).save()
    spec = Ticket.__flue_spec__
    # t-2's row now says a@x, which t-1 holds: its claim cannot be made for it.
    await db.client.hset(spec.record_key(db.keys, "t-2"), "email", "a@x")
    await db.client.zrem(db.keys.all("it_ticket"), "t-3")  # and drift elsewhere
    report = await verify_state((Ticket,), repair=True)
    assert await db.client.zscore(db.keys.all("it_ticket"), "t-3") is not None  # repaired
    left = [(d.kind, d.record_id) for d in report.all_drift]
    assert ("missing", "t-2") in left  # the claim it could not make: reported
    assert all(record_id == "t-2" for _kind, record_id in left)
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    model = ["--model", "tests.integration.models:Ticket", "--collection", "it_ticket"]
    done = await asyncio.to_thread(run_cli, "verify", *common, *model, "--repair", "--json")
    assert done.returncode == 1, done.stderr
    assert "error" not in done.stderr
    assert json.loads(done.stdout)["ok"] is False


async def test_repairing_the_closed_set_keeps_the_entry_of_a_stream_closed_meanwhile(
    db: fm.Database,
) -> None:
    stream: EventStream[dict[str, int]] = EventStream("agents/a")
    await stream.create()
    await db.client.zadd(db.keys.closed_streams(), {"agents/a": 1})  # listed, not closed
    report = await verify_state((WorkflowRun,))
    assert [d.kind for d in report.all_drift] == ["closed_set"]

    async def closed() -> None:
        await EventStream("agents/a").close()

    async with paused_before(db, either(script("zset_forget"), command("ZREM")), closed):
        repaired = await verify_state((WorkflowRun,), repair=True)
    assert repaired.ok, repaired.all_drift
    assert (await db.client.zscore(db.keys.closed_streams(), "agents/a") or 0) > 1


async def test_repairing_a_missing_stream_creates_none_for_a_run_that_ended_meanwhile(
    db: fm.Database,
) -> None:
    await WorkflowRun.start("wf", run_id="r-1")
    await db.client.delete(*db.keys.stream("runs/r-1"))  # an active run without its stream
    report = await verify_state((WorkflowRun,))
    assert [d.kind for d in report.all_drift] == ["missing_stream"]

    async def ended() -> None:
        await WorkflowRun.finish_id("r-1")

    async with paused_before(db, script("stream_create"), ended):
        repaired = await verify_state((WorkflowRun,), repair=True)
    assert repaired.ok, repaired.all_drift
    assert await EventStream("runs/r-1").meta() is None  # no open stream for an ended run


async def test_a_replayed_start_creates_no_stream_for_a_run_that_ended_meanwhile(
    db: fm.Database,
) -> None:
    await WorkflowRun.start("wf", run_id="r-1")
    await db.client.delete(*db.keys.stream("runs/r-1"))  # a start cut short by a crash

    async def ended() -> None:
        await WorkflowRun.finish_id("r-1")

    async with paused_before(db, script("stream_create"), ended):
        replayed = await WorkflowRun.start("wf", run_id="r-1")
    assert replayed.status == "active"  # the copy it read
    assert await EventStream("runs/r-1").meta() is None


async def test_a_refused_deletion_is_not_listed_as_interrupted(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    with pytest.raises(fm.SessionBusyError):
        await Submission.delete_session("s-1")
    assert await Submission.interrupted_deletions() == []
    assert (await Submission.admit_direct("p-2", session_id="s-1", input={})).status == "queued"


async def test_a_racing_deleter_refused_lists_nothing(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})  # queued: busy
    refused: list[BaseException] = []

    async def racing_deleter() -> None:  # while the first one holds the marker
        try:
            await Submission.delete_session("s-1")
        except fm.SessionDeletingError as exc:
            refused.append(exc)

    async with paused_before(db, command("ZRANGE"), racing_deleter):
        with pytest.raises(fm.SessionBusyError):
            await Submission.delete_session("s-1")
    assert len(refused) == 1
    assert await Submission.interrupted_deletions() == []


async def test_requeue_of_an_expired_lease_renewed_meanwhile_is_refused(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", lease=dt.timedelta(milliseconds=1))
    assert attempt is not None

    async def expired() -> bool:
        return bool(await Submission.list_expired())

    await poll_until(expired, "the 1 ms lease to expire by the server clock", seconds=10)

    async def renewed() -> None:  # the worker is alive after all
        assert await Submission.renew_leases("w", ["p-1"], lease=dt.timedelta(minutes=5))

    async with paused_before(db, script("save"), renewed):
        assert await Submission.requeue_expired("p-1") is False
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.owner_id) == ("running", "w")


@pytest.mark.parametrize("session", [None, "s-1"], ids=["by-id", "with-session"])
async def test_a_stale_score_in_the_head_index_never_puts_a_later_submission_first(
    db: fm.Database, session: str | None
) -> None:
    for n in range(3):
        await Submission.admit_direct(f"p-{n}", session_id="s-1", input={})
    open_key = db.keys.session_submissions("s-1").open
    head = await Submission.get("p-0")
    assert head is not None
    await db.client.zadd(open_key, {"p-0": head.sequence + 10**9})  # a stale score
    assert [r.id for r in await Submission.list_runnable()] == ["p-0"]
    assert await Submission.claim("p-1", "w", session_id=session) is None  # not the head
    attempt = await Submission.claim("p-0", "w", session_id=session)
    assert attempt is not None
