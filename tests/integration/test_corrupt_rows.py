"""Corrupted rows: a clear DecodeError naming the key, and one bad row never hides the rest."""

from __future__ import annotations

import warnings

import pytest

import flue_models as fm
from flue_models import WorkflowRun
from tests.integration.models import Ticket


async def three_tickets() -> None:
    for i in range(3):
        await Ticket(id=f"t-{i}", status="open", priority=i).save()


async def test_a_string_where_a_record_should_be_is_a_decode_error(db: fm.Database) -> None:
    key = db.keys.record("it_ticket", "t-1")
    await db.client.set(key, "not a hash")
    with pytest.raises(fm.DecodeError, match="cannot be read as a hash") as caught:
        await Ticket.get("t-1")
    assert caught.value.key == key


async def test_one_bad_row_fails_a_query_unless_skipped(db: fm.Database) -> None:
    await three_tickets()
    bad = db.keys.record("it_ticket", "t-1")
    await db.client.hset(bad, "priority", "not a number")
    with pytest.raises(fm.DecodeError, match="priority"):
        await Ticket.find().all()
    with pytest.warns(fm.SkippedRecordWarning, match="priority"):
        page = await Ticket.find().on_error("skip").page(limit=10)
    assert [t.id for t in page.items] == ["t-0", "t-2"]
    assert [e.key for e in page.skipped] == [bad]
    with pytest.warns(fm.SkippedRecordWarning):
        assert len(await Ticket.find().on_error("skip").all()) == 2
    await db.client.delete(bad)
    await db.client.set(bad, "a string now")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rest = await Ticket.find().on_error("skip").all()
    assert [t.id for t in rest] == ["t-0", "t-2"]
    assert len(seen) == 1
    with pytest.warns(fm.SkippedRecordWarning):  # read by the page's one script call
        (skipped,) = (await Ticket.find().on_error("skip").page(limit=10)).skipped
    assert skipped.key == bad
    assert "cannot be read as a hash" in str(skipped)


async def test_an_on_error_choice_is_checked_by_every_listing(db: fm.Database) -> None:
    await WorkflowRun.start("wf", run_id="r-0")
    with pytest.raises(fm.QueryError, match="on_error"):
        Ticket.find().on_error("ignore")  # type: ignore[arg-type]
    with pytest.raises(fm.QueryError, match="on_error"):
        await WorkflowRun.list(on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(fm.QueryError, match="on_error"):
        await fm.Session.list(on_error="ignore")  # type: ignore[arg-type]


async def test_a_run_with_an_invalid_status_is_a_decode_error_or_skipped(
    db: fm.Database,
) -> None:
    for i in range(3):
        await WorkflowRun.start("wf", run_id=f"r-{i}")
    bad = WorkflowRun.__flue_spec__.record_key(db.keys, "r-1")
    await db.client.hset(bad, "status", "exploded")
    with pytest.raises(fm.DecodeError, match="status"):
        await WorkflowRun.list()
    with pytest.raises(fm.DecodeError, match="status"):
        await WorkflowRun.lookup("r-1")
    with pytest.warns(fm.SkippedRecordWarning, match="status"):
        page = await WorkflowRun.list(on_error="skip")
    assert sorted(p.id for p in page.items) == ["r-0", "r-2"]
    assert [e.key for e in page.skipped] == [bad]


async def test_a_field_name_that_is_not_utf8_is_ignored(db: fm.Database) -> None:
    await three_tickets()
    await db.client.hset(db.keys.record("it_ticket", "t-0"), b"\xff\xfe", b"x")
    found = await Ticket.get("t-0")
    assert found is not None
    assert found.priority == 0
