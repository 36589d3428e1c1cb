"""The minimal ACL of docs/security.md is enough: every part of the library works under a
user limited to its prefix, its commands, and no channels."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import flue_models as fm
from flue_models import EventStream, Retention, Session, Submission, WorkflowRun
from flue_models.keys import KeySpace
from tests.integration.models import Ticket


def documented_acl(prefix: str, password: str) -> list[str]:
    """The ``ACL SETUSER myapp ...`` rules of docs/security.md, word for word, for a prefix."""
    text = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    found = re.search(r"```text\nACL SETUSER myapp (.*?)```", text, re.S)
    assert found, "docs/security.md has no ACL SETUSER block"
    rules = []
    for word in found[1].split():
        if word.startswith(">"):
            word = f">{password}"
        rules.append(word.replace("~myapp::", f"~{prefix}::"))
    return rules


@pytest.fixture
async def minimal_user(redis_url: str, key_prefix: str) -> AsyncIterator[str]:
    admin = aioredis.Redis.from_url(redis_url)
    name = f"flue-acl-{uuid.uuid4().hex[:8]}"
    await admin.execute_command("ACL", "SETUSER", name, *documented_acl(key_prefix, "pw"))
    host = redis_url.split("://", 1)[1].rsplit("@", 1)[-1]
    try:
        yield f"redis://{name}:pw@{host}"
    finally:
        await admin.execute_command("ACL", "DELUSER", name)
        keys = [k async for k in admin.scan_iter(match=f"{key_prefix}::*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def test_the_library_works_under_the_minimal_acl(
    minimal_user: str, key_prefix: str, protocol: int
) -> None:
    async with fm.connect(minimal_user, key_prefix=key_prefix, protocol=protocol) as db:
        assert db.report is not None  # the checks ran (INFO; CONFIG is not granted)
        # models and queries
        await Ticket(id="t-1", status="open", priority=1, email="a@x").save()
        await Ticket.save_many([Ticket(id=f"t-{i}", status="open", priority=i) for i in (2, 3)])
        assert await Ticket.find(Ticket.status == "open", Ticket.priority >= 2).count() == 2
        assert (await Ticket.find().sort_by("-created_at").page(limit=2)).next_cursor
        assert await Ticket.delete_id("t-3")
        # runs and streams
        run = await WorkflowRun.start("wf", run_id="r-1", input={"n": 1})
        await run.events.append({"n": 1})
        await run.events.append_once("k", {"n": 2})
        await run.events.append_chunk_segment(0, "partial")
        await run.finish(result={})
        assert [e.data["n"] async for e in run.events.tail(after="-1")] == [1, 2]
        assert (await WorkflowRun.list(status="completed")).items
        # sessions
        session = await Session.open("s-1")
        await session.append(fm.MessageEntry(id="m1", role="user", content="hi"))
        assert (await Session.load("s-1")) is not None
        # submissions
        await Submission.admit_dispatch("d-1", session_id="s-2", input={})
        attempt = await Submission.claim("d-1", "w")
        assert attempt is not None
        await Submission.insert_attempt_marker("d-1", attempt.attempt_id)
        await Submission.journal_begin(attempt)
        await Submission.journal_phase(attempt, "provider_started", stream_key="st")
        assert await Submission.finish(attempt)
        assert await Submission.delete_session("s-2") == 1
        # maintenance
        await fm.prune(Retention(receipts=dt.timedelta(days=1)))
        assert (await fm.verify_state((Ticket, WorkflowRun, Session, Submission))).ok
        await EventStream("agents/a").create()


async def test_the_minimal_acl_keeps_the_user_in_its_prefix(
    minimal_user: str, key_prefix: str
) -> None:
    async with fm.connect(minimal_user, key_prefix=key_prefix) as db:
        with pytest.raises(fm.errors.CommandError, match=r"NOPERM.*ACL does not allow"):
            await db.client.get("another-app:secret")
        nested = KeySpace(f"{key_prefix}:prod")  # a nested prefix is another user's
        with pytest.raises(fm.errors.CommandError, match=r"NOPERM"):
            await db.client.get(nested.meta)
        with pytest.raises(fm.errors.CommandError, match=r"(?i)NOPERM.*flushdb"):
            await db.client.flushdb()


async def test_a_prefix_outside_the_users_acl_is_a_permission_error_not_a_foreign_schema(
    minimal_user: str, key_prefix: str
) -> None:
    other = f"{key_prefix}-other"
    with pytest.raises(fm.errors.CommandError, match=r"NOPERM") as refused:
        async with fm.connect(minimal_user, key_prefix=other):
            pass
    assert not isinstance(refused.value, fm.errors.SchemaError)
    assert f"{other}::{{meta}}" in str(refused.value)  # the key it was refused
    assert "~<prefix>::*" in str(refused.value)  # and the pattern the ACL needs
