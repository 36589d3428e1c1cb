"""`flue-models verify`: every planted corruption is a finding, never a crash, and
`--repair` clears what is derived."""

from __future__ import annotations

import asyncio
import json

import flue_models as fm
from flue_models import EventStream, Submission, WorkflowRun
from flue_models.state.integrity import verify_state
from tests.command_line import run_cli
from tests.integration.models import Ticket


async def plant(db: fm.Database) -> None:
    """Good state, then one corruption of each kind."""
    for i in range(3):
        await Ticket(id=f"t-{i}", status="open", priority=i, email=f"{i}@x").save()
        await WorkflowRun.start("wf", run_id=f"r-{i}")
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    ended = await WorkflowRun.get("r-0")
    assert ended is not None
    await ended.finish()
    keys, spec = db.keys, Ticket.__flue_spec__
    # rows vs indexes
    await db.client.zrem(spec.equality_key(keys, "status", "open"), "t-0")  # missing
    await db.client.zadd(spec.equality_key(keys, "status", "closed"), {"t-1": 1})  # stale
    await db.client.zadd(keys.all("it_ticket"), {"ghost": 1})  # orphan
    await db.client.zadd(spec.range_key(keys, "priority"), {"t-2": 99})  # wrong score
    await db.client.hset(keys.unique("it_ticket", "email"), "ghost@x", "ghost")  # orphan claim
    await db.client.set(keys.record("it_ticket", "t-bad"), "a string")  # wrong-type row
    await db.client.hset(keys.record("it_ticket", "t-odd"), mapping={"version": "x"})
    await db.client.set(spec.equality_key(keys, "status", "weird"), "not a zset")
    await db.client.zadd(spec.equality_key(keys, "status", "open"), {b"\xff\xfe": 1})
    # streams and runs
    await db.client.zadd(keys.closed_streams(), {"runs/r-1": 1})  # not closed
    await EventStream("runs/r-0", db=db).delete()  # an ended run whose stream is gone: fine
    await db.client.delete(*keys.stream("runs/r-2"))  # an active run without its stream
    await EventStream("agents/a", db=db).create()
    await EventStream("agents/a", db=db).close()
    await db.client.zrem(keys.closed_streams(), "agents/a")  # closed, not listed


async def test_verify_reports_each_planted_corruption_and_repair_clears_the_derived(
    db: fm.Database,
) -> None:
    await plant(db)
    report = await verify_state((fm.WorkflowRun, Submission, Ticket))
    kinds = sorted({d.kind for d in report.all_drift})
    assert kinds == sorted(
        {
            "missing",
            "stale",
            "orphan",
            "wrong_score",
            "wrong_type",
            "undecodable",
            "closed_set",
            "missing_stream",
        }
    )
    repaired = await verify_state((fm.WorkflowRun, Submission, Ticket), repair=True)
    assert repaired.repaired > 0
    left = sorted((d.kind, d.key) for d in repaired.all_drift)
    # What has nothing to derive it from stays: the two rows that are not rows.
    assert left == sorted(
        [
            ("undecodable", db.keys.record("it_ticket", "t-odd")),
            ("wrong_type", db.keys.record("it_ticket", "t-bad")),
        ]
    )
    assert [t.id for t in await Ticket.find(Ticket.status == "open").all()] == [
        "t-0",
        "t-1",
        "t-2",
    ]
    assert await EventStream("runs/r-2").meta() is not None  # recreated for the active run


async def test_the_verify_command(db: fm.Database, redis_url: str) -> None:
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    clean = await asyncio.to_thread(run_cli, "verify", *common)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("ok:")
    await plant(db)
    model = ["--model", "tests.integration.models:Ticket"]
    found = await asyncio.to_thread(run_cli, "verify", *common, *model, "--json")
    assert found.returncode == 1
    as_json = json.loads(found.stdout)
    assert as_json["ok"] is False
    assert {d["kind"] for d in as_json["drift"]} >= {"missing", "orphan", "wrong_type"}
    fixed = await asyncio.to_thread(run_cli, "verify", *common, *model, "--repair")
    assert fixed.returncode == 1  # the two non-rows stay
    assert "repaired" in fixed.stdout.splitlines()[-1]
    only = await asyncio.to_thread(run_cli, "verify", *common, "--collection", "session")
    assert only.returncode == 0, only.stdout
    unknown = await asyncio.to_thread(run_cli, "verify", *common, "--collection", "nope")
    assert unknown.returncode == 2
    bad_model = await asyncio.to_thread(run_cli, "verify", *common, "--model", "os:path")
    assert bad_model.returncode == 2


async def test_a_session_whose_entries_disagree_with_its_row_is_reported(
    db: fm.Database,
) -> None:
    session = await fm.Session.open("s-1")
    await session.append_many(
        [
            fm.MessageEntry(id="m1", role="user", content="hi"),
            fm.MessageEntry(id="m2", parent_id="m1", role="assistant", content="x" * 600_000),
            fm.MessageEntry(id="m3", parent_id="m2", role="user", content="ok"),
        ]
    )
    assert (await verify_state((fm.Session,))).ok  # a chunked entry counts its elements
    ids_key = db.keys.session("s-1").entry_ids
    await db.client.hset(ids_key, "m3", "1")
    await db.client.hset(db.keys.session("s-1").row, "entry_count", "7")
    report = await verify_state((fm.Session,))
    details = sorted(d.detail for d in report.all_drift if d.kind == "session_entries")
    assert details == ["3 entries, the row says 7", "entry_ids disagree"]
    await db.client.rpush(db.keys.session("s-1").entries, b"Xgarbage")
    report = await verify_state((fm.Session,))
    assert [d.kind for d in report.all_drift] == ["session_entries"]
    assert "is not an entry" in report.all_drift[0].detail
