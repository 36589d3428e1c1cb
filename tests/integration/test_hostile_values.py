"""Values that cannot be stored exactly are refused before any I/O, naming the field;
the store is left as it was."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

import flue_models as fm
from flue_models import EventStream, Session, Submission, WorkflowRun
from tests.integration.models import Everything, Ticket

BAD_TEXT = "bad\ud800"
PLUS_FIVE = dt.timezone(dt.timedelta(hours=5))


async def keys_under(db: fm.Database) -> list[bytes]:
    return sorted([k async for k in db.client.scan_iter(match=db.keys.pattern())])


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Ticket(id="t-1", status=BAD_TEXT, priority=1), "status"),
        (lambda: Ticket(id="t-1", status="open", priority=1, title=BAD_TEXT), "title"),
        (lambda: WorkflowRun(workflow="w", started_at=dt.datetime(1, 1, 1, tzinfo=PLUS_FIVE)),
         "started_at"),
        (lambda: WorkflowRun(workflow="w", started_at=dt.datetime.now(dt.UTC),
                             input={"x": float("nan")}), "input"),
        (lambda: WorkflowRun(workflow="w", started_at=dt.datetime.now(dt.UTC),
                             result=[10**5000]), "result"),
    ],
)  # fmt: skip
async def test_a_record_that_cannot_be_stored_is_refused_naming_the_field(
    db: fm.Database, make: Any, field: str
) -> None:
    before = await keys_under(db)
    record = make()
    with pytest.raises(fm.EncodingError, match=f"'{field}'"):
        await record.save()
    assert await keys_under(db) == before


@pytest.mark.parametrize(
    "value", [Decimal("1E+1000000"), Decimal("1E+999999"), Decimal("-1E-1001")]
)
async def test_decimals_beyond_the_bound_are_refused(db: fm.Database, value: Decimal) -> None:
    before = await keys_under(db)
    with pytest.raises(fm.EncodingError, match="'money'"):
        await Everything(id="e-1", money=value).save()
    assert await keys_under(db) == before


@pytest.mark.parametrize(
    "event", [{"x": float("inf")}, {"x": BAD_TEXT}, {BAD_TEXT: 1}, {"x": [10**5000]}]
)
async def test_an_event_that_cannot_be_stored_is_refused(db: fm.Database, event: Any) -> None:
    stream = EventStream("s")
    await stream.create()
    with pytest.raises(fm.EncodingError, match="nothing was appended"):
        await stream.append(event)
    assert (await stream.meta()).length == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "content",
    [{"x": float("inf")}, {"x": BAD_TEXT}, {BAD_TEXT: 1}, [10**5000], b"bytes"],
)
async def test_session_content_that_cannot_be_stored_is_refused(
    db: fm.Database, content: Any
) -> None:
    """Each case fails the quick plain-JSON pass, and the full walk names the problem (or
    finds none: bytes are written as JSON text, read back as such)."""
    session = await Session.open("s-1")
    entry = fm.MessageEntry(id="m1", role="user", content=content)
    if isinstance(content, bytes):
        await session.append(entry)
        loaded = await Session.load("s-1")
        assert loaded is not None
        assert [e.content for e in loaded.entries] == ["bytes"]
        return
    with pytest.raises(fm.EncodingError, match="'m1'"):
        await session.append(entry)
    loaded = await Session.load("s-1")
    assert loaded is not None
    assert loaded.entries == []


async def test_session_content_and_admission_input_are_checked(db: fm.Database) -> None:
    session = await Session.open("s-1")
    with pytest.raises(fm.EncodingError, match="'m1'"):
        await session.append(fm.MessageEntry(id="m1", role="user", content={"t": float("nan")}))
    loaded = await Session.load("s-1")
    assert loaded is not None
    assert loaded.entries == []
    with pytest.raises(fm.EncodingError, match="'p-1'"):
        await Submission.admit_direct("p-1", session_id="s-1", input={"x": float("-inf")})
    assert await Submission.get("p-1") is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: Ticket.get(BAD_TEXT),
        lambda: EventStream(BAD_TEXT).create(),
        lambda: Session.open(BAD_TEXT),
        lambda: WorkflowRun.start("w", run_id=BAD_TEXT),
        lambda: Submission.admit_direct("p-1", session_id=BAD_TEXT, input={}),
        lambda: Submission.insert_attempt_marker(BAD_TEXT, "a"),
    ],
)
async def test_a_lone_surrogate_in_an_id_or_path_is_refused(db: fm.Database, call: Any) -> None:
    before = await keys_under(db)
    with pytest.raises(fm.FlueModelsError, match="surrogate"):
        await call()
    assert await keys_under(db) == before


async def test_a_long_indexed_value_gets_a_short_key_and_exact_equality(
    db: fm.Database,
) -> None:
    long_a, long_b = "a" * 1_000_000, "a" * 999_999 + "b"
    await Ticket(id="t-a", status=long_a, priority=1).save()
    await Ticket(id="t-b", status=long_b, priority=2).save()
    await Ticket(id="t-s", status="short", priority=3).save()
    names = [k.decode() async for k in db.client.scan_iter(match=db.keys.pattern())]
    assert max(len(name) for name in names) < 200  # was 1.4 MB
    assert [t.id for t in await Ticket.find(Ticket.status == long_a).all()] == ["t-a"]
    assert [t.id for t in await Ticket.find(Ticket.status.in_([long_b, "short"])).all()] == [
        "t-b",
        "t-s",
    ]
    assert await Ticket.find(Ticket.status == "a" * 1_000_001).all() == []
    found = await Ticket.get("t-a")
    assert found is not None
    await found.update(status="short")
    assert await Ticket.find(Ticket.status == long_a).count() == 0
    assert (await fm.verify_collection(Ticket)).ok


async def test_a_key_json_would_turn_into_text_is_refused_where_nothing_restores_it(
    db: fm.Database,
) -> None:
    """An untyped event, session content and a submission's input are stored as JSON and
    read back as JSON: a key that is not a string would come back as text, so it is
    refused, naming where, and nothing is written. A typed stream restores its keys."""
    stream = EventStream("untyped")
    await stream.create()
    with pytest.raises(fm.EncodingError, match=r"a key 1 is not a string.*'1'"):
        await stream.append({"counts": {1: "one"}})
    assert (await stream.meta()).length == 0  # type: ignore[union-attr]
    session = await Session.open("s-1")
    with pytest.raises(fm.EncodingError, match=r"'m1'.*a key None is not a string"):
        await session.append(fm.MessageEntry(id="m1", role="user", content={None: 1}))
    loaded = await Session.load("s-1")
    assert loaded is not None
    assert loaded.entries == []
    with pytest.raises(fm.EncodingError, match=r"'p-1'.*a key True is not a string"):
        await Submission.admit_direct("p-1", session_id="s-1", input={"flags": {True: 1}})
    assert await Submission.get("p-1") is None
    await Submission.admit_direct("p-2", session_id="s-1", input={})
    attempt = await Submission.claim("p-2", "w")
    assert attempt is not None
    with pytest.raises(fm.ConfigurationError, match="a key 2 is not a string"):
        await Submission.journal_phase(attempt, "provider_started", detail={2: "x"})

    class Counts(BaseModel):
        by_number: dict[int, str]

    typed = EventStream("typed", model=Counts)
    await typed.create()
    await typed.append(Counts(by_number={1: "one"}))
    (event,) = (await typed.read()).events
    assert event.data == Counts(by_number={1: "one"})
