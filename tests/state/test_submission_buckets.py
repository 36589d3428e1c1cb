"""Submissions in 16 buckets, by session: what a session owns is in its bucket, receipts
in their id's, sequence numbers increase per session and follow the clock across
sessions, reads by id alone find a submission in any bucket (and name an id held
twice), and the walks over every bucket (deletions, receipts) miss none."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import flue_models as fm
from flue_models.keys import bucket_of
from flue_models.state.retention import Retention, prune
from flue_models.state.submission import SUBMISSION_BUCKETS, Attempt, Submission

SPEC = Submission.__flue_spec__


def sessions_in_other_buckets(count: int) -> list[str]:
    """``count`` session ids whose buckets all differ."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        found.setdefault(bucket_of(f"s-{n}", SUBMISSION_BUCKETS), f"s-{n}")
        n += 1
    return list(found.values())


async def test_what_a_session_owns_is_in_its_bucket_and_receipts_in_their_ids(
    db: fm.Database,
) -> None:
    await Submission.admit_dispatch("d-1", session_id="s-1", input={})
    attempt = await Submission.claim("d-1", "w")
    assert attempt is not None
    assert attempt.session_id == "s-1"
    await Submission.journal_begin(attempt)
    home = db.keys.in_bucket(bucket_of("s-1", SUBMISSION_BUCKETS))
    assert await db.client.exists(home.record("submission", "d-1")) == 1
    assert await db.client.exists(home.owned("submission", "journal", "d-1")) == 1
    assert await db.client.zscore(home.all("submission"), "d-1") is not None
    head = SPEC.equality_key(home, "open_session", "s-1")
    assert await db.client.zrange(head, 0, -1) == [b"d-1"]
    assert await db.client.exists(home.collection_key("submission", "sequence")) == 1
    assert await Submission.finish(attempt)
    assert await Submission.delete_session("s-1") == 1
    by_id = db.keys.in_bucket(bucket_of("d-1", SUBMISSION_BUCKETS))
    assert await db.client.exists(by_id.owned("submission", "receipt", "d-1")) == 1
    assert await db.client.zscore(by_id.collection_key("submission", "receipt_times"), "d-1")
    assert await db.client.exists(home.record("submission", "d-1")) == 0
    replay = await Submission.admit_dispatch("d-1", session_id="s-1", input={})
    assert (replay.created, replay.receipt is not None) == (False, True)


async def test_sequence_numbers_increase_per_session_and_follow_the_clock_across(
    db: fm.Database,
) -> None:
    first, other = sessions_in_other_buckets(2)
    a = await Submission.admit_direct("a", session_id=first, input={})
    b = await Submission.admit_direct("b", session_id=other, input={})
    now = await db.server_time()
    micros = int(now.timestamp() * 1_000_000)
    assert a.sequence < b.sequence <= micros + 1_000  # landing order, by the clock
    # A counter ahead of the clock (a clock stepped back, or skew between primaries)
    # still gives the session strictly increasing numbers.
    counter = db.keys.session_submissions(first).sequence
    ahead = micros + 10**12
    await db.client.set(counter, str(ahead))
    c = await Submission.admit_direct("c", session_id=first, input={})
    assert c.sequence == ahead + 1
    d = await Submission.admit_direct("d", session_id=first, input={})
    assert d.sequence == ahead + 2
    e = await Submission.admit_direct("e", session_id=other, input={})
    assert b.sequence < e.sequence < ahead  # another bucket: its own counter, the clock
    stored = await Submission.get("c")
    assert stored is not None
    assert stored.sequence == ahead + 1  # exact: no digits lost on the way (16 of them)
    # Listings in sequence order: the clock across buckets, then the counter ahead of it.
    assert [r.id for r in await Submission.find().all()] == ["a", "b", "e", "c", "d"]


async def test_an_admission_of_one_id_into_a_session_of_another_bucket_is_a_conflict(
    db: fm.Database,
) -> None:
    first, other = sessions_in_other_buckets(2)
    await Submission.admit_dispatch("d-1", session_id=first, input={"n": 1})
    result = await Submission.admit_dispatch("d-1", session_id=other, input={"n": 1})
    assert result.conflict
    assert result.submission is not None
    assert result.submission.session_id == first
    assert await Submission.find(Submission.session_id == other).count() == 0
    assert await Submission.get("d-1", partition=other) is None
    found = await Submission.get("d-1", partition=first)
    assert found is not None
    assert found.session_id == first


@pytest.mark.standalone  # a cluster reads the other buckets first: its known limit
async def test_racing_admissions_of_one_id_into_two_sessions_land_once_on_one_server(
    db: fm.Database,
) -> None:
    """On one server the write is guarded by the id's key in every other bucket, so of
    two admissions of one id into two sessions at the same moment exactly one lands."""
    first, other = sessions_in_other_buckets(2)
    for n in range(20):
        a, b = await asyncio.gather(
            Submission.admit_dispatch(f"d-{n}", session_id=first, input={}),
            Submission.admit_dispatch(f"d-{n}", session_id=other, input={}),
        )
        assert sorted([a.created, b.created]) == [False, True]
        loser, winner = (b, a) if a.created else (a, b)
        assert loser.conflict
        assert loser.submission == winner.submission
        found = await Submission.get(f"d-{n}")  # held once: no CorruptDataError
        assert found == winner.submission
    assert (await fm.verify_collection(fm.Submission)).ok


async def test_a_receipt_answers_an_admission_of_its_id_into_another_session(
    db: fm.Database,
) -> None:
    first, other = sessions_in_other_buckets(2)
    await Submission.admit_dispatch("d-1", session_id=first, input={})
    assert await Submission.settle_queued("d-1", "aborted")
    assert await Submission.delete_session(first) == 1
    counter = db.keys.session_submissions(other).sequence
    again = await Submission.admit_dispatch("d-1", session_id=other, input={})
    assert (again.created, again.conflict, again.submission) == (False, True, None)
    assert again.receipt is not None
    assert again.receipt["session_id"] == first
    assert await Submission.get("d-1") is None  # nothing was written
    assert await db.client.get(counter) is None  # and no number taken


@pytest.mark.standalone  # the hand edit copies a row into another slot
async def test_an_id_held_in_two_sessions_is_named_not_guessed(db: fm.Database) -> None:
    first, other = sessions_in_other_buckets(2)
    await Submission.admit_direct("p-1", session_id=first, input={})
    held = SPEC.record_key(db.keys, "p-1", first)
    copy = SPEC.record_key(db.keys, "p-1", other)
    await db.client.copy(held, copy)
    await db.client.hset(copy, "session_id", other)
    with pytest.raises(fm.CorruptDataError) as caught:
        await Submission.get("p-1")
    assert held in str(caught.value)
    assert copy in str(caught.value)
    with pytest.raises(fm.CorruptDataError):
        await Submission.admit_direct("p-1", session_id=first, input={})
    with pytest.raises(fm.CorruptDataError):
        await Submission.claim("p-1", "w")
    row = await Submission.get("p-1", partition=first)
    assert row is not None
    assert row.session_id == first


async def test_an_attempt_without_its_session_still_finds_its_row(db: fm.Database) -> None:
    """An ``Attempt`` a worker rebuilt from what it kept (without the session) works."""
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    bare = Attempt(attempt.submission_id, attempt.attempt_id, "w", attempt.lease_expires_at)
    assert bare.session_id is None
    assert await Submission.journal_begin(bare) == 1
    assert await Submission.mark_input_applied(bare)
    assert await Submission.finish(bare)
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.outcome) == ("settled", "completed")
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert journal.attempt_id == attempt.attempt_id
    stale = Attempt("gone", "a-1", "w", attempt.lease_expires_at)
    assert await Submission.journal_begin(stale) is None
    assert await Submission.finish(stale) is False


async def test_walks_over_every_bucket_miss_nothing(db: fm.Database) -> None:
    sessions = sessions_in_other_buckets(4)
    for session_id in sessions:  # interrupted deletions in four buckets
        await db.client.sadd(db.keys.session_submissions(session_id).deletions, session_id)
    assert await Submission.interrupted_deletions() == sorted(sessions)

    receipts = []
    for n, session_id in enumerate(sessions):
        for k in range(3):
            receipt_id = f"d-{n}-{k}"
            await Submission.admit_dispatch(receipt_id, session_id=session_id, input={})
            assert await Submission.settle_queued(receipt_id, "aborted")
            receipts.append(receipt_id)
        await db.client.srem(db.keys.session_submissions(session_id).deletions, session_id)
        assert await Submission.delete_session(session_id) == 3
    buckets = {bucket_of(r, SUBMISSION_BUCKETS) for r in receipts}
    assert len(buckets) > 1
    assert (await prune(Retention(receipts=dt.timedelta(days=1)), dry_run=True)).counts == {
        "receipts": 0
    }
    for receipt_id in receipts:  # every receipt a week old
        _key, times = db.keys.receipt(receipt_id)
        week_ago = int((await db.server_time()).timestamp() * 1000) - 7 * 86_400_000
        await db.client.zadd(times, {receipt_id: week_ago})
    due = await prune(Retention(receipts=dt.timedelta(days=1)), dry_run=True)
    assert due.counts == {"receipts": 12}
    report = await prune(Retention(receipts=dt.timedelta(days=1)), limit=5)
    assert report.counts == {"receipts": 5}  # the oldest five, over the buckets
    report = await prune(Retention(receipts=dt.timedelta(days=1)), limit=100)
    assert report.counts == {"receipts": 7}
    for receipt_id in receipts:
        receipt, _times = db.keys.receipt(receipt_id)
        assert await db.client.exists(receipt) == 0
