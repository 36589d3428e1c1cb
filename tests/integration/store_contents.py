"""One of everything the library stores, written and then read back in full: what the
tests of moving a store (into a cluster, between bucket counts) count and compare."""

from __future__ import annotations

import pytest

import flue_models as fm
from flue_models import EventStream, Session, Submission, WorkflowRun
from flue_models.errors import UniqueViolationError
from flue_models.state.integrity import verify_state
from tests.integration.models import Ticket

MODELS = (Ticket, WorkflowRun, Submission, Session)


async def fill(db: fm.Database) -> None:
    """One of everything the library stores."""
    for i in range(4):
        await Ticket(id=f"t-{i}", status="open", priority=i, email=f"{i}@x", owner="ann").save()
    await Ticket(id="t-4", status="closed", priority=9).save()
    run = await WorkflowRun.start("wf", run_id="r-1", input={"n": 1})
    await run.events.append({"n": 1})
    await run.events.append_once("k", {"n": 2})
    await run.events.append_chunk_segment(0, "partial")
    await run.finish(result={"ok": True})
    await WorkflowRun.start("wf", run_id="r-2")
    session = await Session.open(fm.session_key("support", "eu", "claude", "main"))
    await session.append(fm.MessageEntry(id="m1", role="user", content="hi"))
    await session.append(fm.MessageEntry(id="m2", parent_id="m1", role="assistant", content="yo"))
    await Submission.admit_dispatch("d-1", session_id="s-1", input={"q": 1})
    await Submission.admit_direct("p-1", session_id="s-2", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    await Submission.journal_begin(attempt)
    await Submission.journal_phase(attempt, "provider_started", stream_key="runs/r-1")
    await Submission.insert_attempt_marker("p-1", attempt.attempt_id)
    await Submission.admit_direct("p-2", session_id="s-3", input={})
    assert await Submission.settle_queued("p-2", "aborted")
    stream = EventStream("agents/a")
    await stream.create()
    await stream.append({"x": 1})


async def all_keys(db: fm.Database) -> list[str]:
    return sorted([k.decode() async for k in db.client.scan_iter(match=db.keys.pattern())])


async def readable_everywhere(db: fm.Database) -> None:
    """Every kind of state reads as it was written."""
    assert await Ticket.find(Ticket.status == "open").count() == 4
    assert [t.id for t in await Ticket.find(Ticket.priority >= 2).sort_by("priority").all()] == [
        "t-2",
        "t-3",
        "t-4",
    ]
    with pytest.raises(UniqueViolationError):  # the unique claim of "0@x" moved with its row
        await Ticket(id="t-9", status="open", priority=1, email="0@x").save()
    runs = await WorkflowRun.list(status="completed")
    assert [r.id for r in runs.items] == ["r-1"]
    assert [e.data for e in (await EventStream("runs/r-1").read()).events] == [{"n": 1}, {"n": 2}]
    assert [c.body for c in await EventStream("runs/r-1").chunk_segments()] == ["partial"]
    replay = await EventStream("runs/r-1").meta()
    assert replay is not None
    assert replay.closed
    sid = fm.session_key("support", "eu", "claude", "main")
    loaded = await Session.load(sid)
    assert loaded is not None
    assert [m.id for m in loaded.entries] == ["m1", "m2"]
    assert [s.id for s in (await Session.find(Session.agent == "support").all())] == [sid]
    assert (
        await Submission.admit_dispatch("d-1", session_id="s-1", input={"q": 1})
    ).created is False
    assert [s.id for s in await Submission.list_running()] == ["p-1"]
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert journal.stream_key == "runs/r-1"
    assert (await EventStream("agents/a").read()).events[0].data == {"x": 1}
    report = await verify_state(MODELS)
    assert report.ok, report
