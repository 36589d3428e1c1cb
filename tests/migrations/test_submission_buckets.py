"""Migration 0009_submission_buckets: the submissions of a store at version 8 (every
submission, journal, receipt, marker and counter in bucket 0) move into the bucket of
their session (receipts: of their id), counted, and work as before; ``down`` gathers
them back; refusals move nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

import flue_models as fm
from flue_models import Submission
from flue_models.errors import MigrationFailedError
from flue_models.keys import bucket_of
from flue_models.model.buckets import bucket_field, partition_field, stored_buckets
from flue_models.schema import migrate
from flue_models.state.integrity import verify_state
from flue_models.state.submission import SUBMISSION_BUCKETS
from tests.conftest import BUILTIN_MIGRATIONS
from tests.migrations.layouts import (
    declaring,
    refused_for_another_client,
    remove_prefix,
    unmigrated,
)

#: It and the built-in files after it.
FROM_0009 = BUILTIN_MIGRATIONS[8:]
SPEC = Submission.__flue_spec__
SESSIONS = [f"s-{n}" for n in range(8)]
#: Submissions move between slots: a standalone server only (a cluster refuses the move).
pytestmark = pytest.mark.standalone


@dataclass
class Version8:
    """What the fixture wrote: each submission's session, and the kept receipts."""

    sessions: dict[str, str] = field(default_factory=dict)
    receipts: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)


async def submissions_in_one_bucket(db: fm.Database) -> Version8:
    """Per session a settled dispatch, a running prompt with a journal and a queued one;
    a deleted session's receipts; an interrupted deletion; attempt markers; then the
    store moved back to version 8."""
    made = Version8()
    with declaring(Submission, 1):
        for session_id in SESSIONS:
            done = f"d-{session_id}"
            await Submission.admit_dispatch(done, session_id=session_id, input={"n": 1}, db=db)
            attempt = await Submission.claim(done, "w", db=db)
            assert attempt is not None
            assert await Submission.finish(attempt, db=db)
            running = f"p-{session_id}"
            await Submission.admit_direct(running, session_id=session_id, input={}, db=db)
            attempt = await Submission.claim(running, "w", db=db)
            assert attempt is not None
            await Submission.journal_begin(attempt, db=db)
            await Submission.journal_phase(attempt, "provider_started", db=db)
            await Submission.insert_attempt_marker(running, attempt.attempt_id, db=db)
            waiting = f"q-{session_id}"
            await Submission.admit_direct(waiting, session_id=session_id, input={}, db=db)
            made.sessions |= {done: session_id, running: session_id, waiting: session_id}
        for n in range(6):
            gone = f"r-{n}"
            await Submission.admit_dispatch(gone, session_id="s-gone", input={"n": n}, db=db)
            assert await Submission.settle_queued(gone, "aborted", db=db)
            made.receipts.append(gone)
        assert await Submission.delete_session("s-gone", db=db) == 6
        await Submission.admit_direct("p-int", session_id="s-int", input={}, db=db)
        assert await Submission.settle_queued("p-int", "aborted", db=db)
        made.sessions["p-int"] = "s-int"
        zero = db.keys.in_bucket(0)
        await db.client.set(zero.owned("submission", "deleting", "s-int"), "x", px=600_000)
        await db.client.sadd(zero.collection_key("submission", "deletions"), "s-int")
        made.heads = [r.id for r in await Submission.list_runnable(db=db)]
    await db.client.hset(db.keys.meta, "schema_version", "8")
    applied = [f"applied:flue:{label[5:9]}" for label in FROM_0009]
    await db.client.hdel(
        db.keys.meta, *applied, bucket_field("submission"), partition_field("submission")
    )
    return made


@pytest.fixture
async def version_8(redis_url: str, key_prefix: str) -> AsyncIterator[Version8]:
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        made = await submissions_in_one_bucket(db)
    yield made
    await remove_prefix(redis_url, key_prefix)


async def all_keys(db: fm.Database) -> list[str]:
    return sorted([k.decode() async for k in db.client.scan_iter(match=db.keys.pattern())])


async def contents(db: fm.Database) -> list[tuple[str, object]]:
    """Everything stored of submissions, with the bucket taken out of every key name:
    each row's fields, journal field, receipt, index entry and set member (not the
    counters, which a move seeds): what a move must keep, counted."""
    found: list[tuple[str, object]] = []
    for key in await all_keys(db):
        bucket = db.keys.bucket_in_key("submission", key)
        if bucket is None or key.endswith((":version", "/sequence")):
            continue
        name = key.replace(f"{{submission:{bucket}}}", "{submission:*}")
        kind = (await db.client.type(key)).decode()
        if kind == "hash":
            found += [(name, item) for item in (await db.client.hgetall(key)).items()]
        elif kind == "zset":
            found += [(name, item) for item in await db.client.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            found += [(name, member) for member in await db.client.smembers(key)]
        else:
            found.append((name, await db.client.get(key)))
    return sorted(((name, _untagged(item)) for name, item in found), key=repr)


def _untagged(item: object) -> object:
    """``item`` with every bucket tag in it (``_owned`` names index keys) taken out."""
    if isinstance(item, tuple):
        return tuple(_untagged(part) for part in item)
    if isinstance(item, bytes):
        return re.sub(rb"\{submission:\d+\}", b"{submission:*}", item)
    return item


async def test_0009_moves_each_submission_into_its_sessions_bucket_and_nothing_is_lost(
    redis_url: str, key_prefix: str, version_8: Version8
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        zero = db.keys.in_bucket(0)
        assert await db.client.zcard(zero.all("submission")) == len(version_8.sessions)
        before = await contents(db)
        counter = int(await db.client.get(zero.collection_key("submission", "sequence")))
        times = dict(
            await db.client.zrange(
                zero.collection_key("submission", "receipt_times"), 0, -1, withscores=True
            )
        )
        applied = await migrate(db)
        assert [s.file.label for s in applied] == FROM_0009
        assert (await stored_buckets(db))["submission"] == SUBMISSION_BUCKETS
        assert await db.client.hget(db.keys.meta, partition_field("submission")) == b"session_id"
        for submission_id, session_id in version_8.sessions.items():
            home = db.keys.in_bucket(bucket_of(session_id, SUBMISSION_BUCKETS))
            assert await db.client.exists(home.record("submission", submission_id)) == 1
        for session_id in SESSIONS:
            journal = Submission.journal_key(db.keys, f"p-{session_id}", session_id)
            assert await db.client.hget(journal, "phase") == b"provider_started"
        for receipt_id in version_8.receipts:
            receipt, receipt_times = Submission._receipt_keys(db.keys, receipt_id)
            assert await db.client.exists(receipt) == 1
            assert await db.client.zscore(receipt_times, receipt_id) == times[receipt_id.encode()]
        marker = Submission._deleting_key(db.keys, "s-int")
        assert 0 < await db.client.pttl(marker) <= 600_000  # moved with its lease
        deletions = Submission._session_key(db.keys, "s-int", "deletions")
        assert await db.client.smembers(deletions) == {b"s-int"}
        counters = [
            int(await db.client.get(b.collection_key("submission", "sequence")) or 0)
            for b in SPEC.bucket_keys(db.keys)
        ]
        assert min(counters) == counter  # every bucket goes on from the old counter
        assert await contents(db) == before  # counted: every field, entry and member
        assert len(before) > 300
        assert await migrate(db) == []  # nothing left to do

    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        assert (await verify_state((Submission,))).ok
        assert [r.id for r in await Submission.list_runnable()] == version_8.heads
        assert await Submission.claim("q-s-0", "w") is None  # p-s-0 is its running head
        running = await Submission.get("p-s-0")
        assert running is not None
        assert running.status == "running"
        replay = await Submission.admit_dispatch("r-2", session_id="s-gone", input={"n": 2})
        assert (replay.created, replay.receipt is not None) == (False, True)
        conflict = await Submission.admit_dispatch("r-3", session_id="s-other", input={"n": 3})
        assert conflict.conflict
        assert await Submission.interrupted_deletions() == ["s-int"]
        with pytest.raises(fm.SubmissionError, match="being deleted"):
            await Submission.admit_direct("p-new", session_id="s-int", input={})
        newest = await Submission.admit_direct("p-new", session_id="s-0", input={})
        stored = await Submission.find(Submission.session_id == "s-0").all()
        assert max(r.sequence for r in stored) == newest.sequence  # numbers go on
        assert await Submission.find(Submission.status == "queued").count() == 9


async def test_0009_down_gathers_everything_back_and_up_again_is_the_same(
    redis_url: str, key_prefix: str, version_8: Version8
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        before = await all_keys(db)
        await migrate(db)
        spread = await all_keys(db)
        reverted = await migrate(db, to=8)
        assert [(s.file.label, s.direction) for s in reverted] == [
            (label, "down") for label in reversed(FROM_0009)
        ]
        assert "submission" not in await stored_buckets(db)
        assert await db.client.hget(db.keys.meta, partition_field("submission")) is None
        assert await all_keys(db) == before  # every key back where version 8 keeps it
        again = await migrate(db)
        assert [s.file.label for s in again] == FROM_0009
        assert await all_keys(db) == spread
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        assert (await verify_state((Submission,))).ok
        assert [r.id for r in await Submission.list_runnable()] == version_8.heads


async def test_0009_refuses_while_another_client_uses_the_prefix_and_moves_nothing(
    redis_url: str, key_prefix: str, version_8: Version8
) -> None:
    async with refused_for_another_client(redis_url, key_prefix) as other:
        zero = other.keys.in_bucket(0)
        assert await other.client.zcard(zero.all("submission")) == len(version_8.sessions)
        spread = [
            k async for k in other.client.scan_iter(match=f"{key_prefix}::{{submission:[1-9]*")
        ]
        assert spread == []


@pytest.mark.parametrize("in_the_way", ["receipt", "wrong_type"])
async def test_0009_refuses_before_the_first_write(
    redis_url: str, key_prefix: str, version_8: Version8, in_the_way: str
) -> None:
    async with unmigrated(redis_url, key_prefix) as db:
        if in_the_way == "receipt":  # a key where a receipt would move to
            receipt = next(r for r in version_8.receipts if bucket_of(r, SUBMISSION_BUCKETS))
            target, _times = Submission._receipt_keys(db.keys, receipt)
            await db.client.set(target, "someone else's")
        else:  # the set of deletions as a string
            deletions = db.keys.in_bucket(0).collection_key("submission", "deletions")
            await db.client.delete(deletions)
            await db.client.set(deletions, "s-int")
        before = {key: await db.client.dump(key) for key in await all_keys(db)}
        with pytest.raises(MigrationFailedError, match="0009"):
            await migrate(db)
        assert {key: await db.client.dump(key) for key in await all_keys(db)} == before
