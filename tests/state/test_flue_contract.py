"""The Flue recovery contract, case by case, on a real server.

Organised by the contract's sections: lifecycle and versioning, submissions, journals,
stream chunks, attempt markers, session deletion, runs, streams. Each case is written
from the contract's description and fails without the behaviour it names.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import flue_models as fm
from flue_models.errors import SessionDeletingError
from flue_models.state.submission import Attempt, Submission
from tests.waiting import poll_until

pytestmark = pytest.mark.usefixtures("db")


def index_key(db: fm.Database, field: str, value: str, session_id: str = "s-1") -> str:
    """The equality index of ``field == value`` in the bucket of the session's rows."""
    spec = Submission.__flue_spec__
    return spec.equality_key(spec.keys_of(db.keys, session_id), field, value)


async def running(submission_id: str = "p-1", session_id: str = "s-1") -> Attempt:
    """Admit a direct prompt and claim it."""
    await Submission.admit_direct(submission_id, session_id=session_id, input={})
    attempt = await Submission.claim(submission_id, "w1")
    assert attempt is not None
    return attempt


# Lifecycle and versioning -----------------------------------------------------------


async def test_a_journal_step_gives_the_row_a_new_version(db: fm.Database) -> None:
    attempt = await running()
    before = await Submission.get("p-1")
    assert before is not None
    await Submission.journal_begin(attempt)
    after = await Submission.get("p-1")
    assert after is not None
    assert after.version > before.version
    with pytest.raises(fm.ConflictError):  # a copy read before the step is stale
        await before.save()


async def test_a_full_last_page_has_no_cursor(db: fm.Database) -> None:
    for i in range(4):
        await fm.WorkflowRun.start("wf", run_id=f"r-{i}")
    first = await fm.WorkflowRun.list(limit=2)
    assert first.next_cursor is not None
    second = await fm.WorkflowRun.list(limit=2, cursor=first.next_cursor)
    assert len(second.items) == 2
    assert second.next_cursor is None  # looked one ahead: nothing follows
    for i in range(3):
        await Submission.admit_direct(f"p-{i}", session_id=f"s-{i}", input={})
    exact = await Submission.find().page(limit=3)
    assert (len(exact.items), exact.next_cursor) == (3, None)


# Submissions ------------------------------------------------------------------------


async def test_requeue_before_input_applied_clears_the_attempt_and_the_stamp(
    db: fm.Database,
) -> None:
    attempt = await running()
    assert await Submission.requeue(attempt) is True
    row = await Submission.get("p-1")
    assert row is not None
    cleared = (row.attempt_id, row.owner_id, row.lease_expires_at, row.input_applied_at)
    assert (row.status, cleared) == ("queued", (None, None, None, None))
    again = await Submission.claim("p-1", "w2")
    assert again is not None
    assert await Submission.mark_input_applied(again) is True  # the next attempt applies it


async def test_requeue_is_refused_once_the_input_was_applied(db: fm.Database) -> None:
    attempt = await running()
    assert await Submission.mark_input_applied(attempt)
    assert await Submission.requeue(attempt) is False
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.attempt_id) == ("running", attempt.attempt_id)


async def test_replace_attempt_keeps_the_input_applied_stamp(db: fm.Database) -> None:
    attempt = await running()
    assert await Submission.mark_input_applied(attempt)
    stamped = await Submission.get("p-1")
    assert stamped is not None
    handed = await Submission.replace_attempt("p-1", attempt.attempt_id, "w2")
    assert handed is not None
    row = await Submission.get("p-1")
    assert row is not None
    assert row.input_applied_at == stamped.input_applied_at
    assert (row.owner_id, row.attempt_id, row.attempt_count) == ("w2", handed.attempt_id, 2)


async def test_listings_trust_the_row_over_a_stale_queued_entry(db: fm.Database) -> None:
    attempt = await running()
    # A stale entry: the running row is also in the queued index (a crash, a hand edit).
    await db.client.zadd(index_key(db, "status", "queued"), {"p-1": 1})
    assert await Submission.list_runnable() == []
    assert [r.id for r in await Submission.list_running()] == [attempt.submission_id]


async def test_a_mutation_repairs_the_status_indexes_of_its_row(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    settled = index_key(db, "status", "settled")
    await db.client.zadd(settled, {"p-1": 1})  # stale
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    assert await db.client.zscore(settled, "p-1") is None
    assert (await fm.verify_collection(Submission)).ok


@pytest.mark.parametrize("session", [None, "s-1"], ids=["by-id", "with-session"])
async def test_a_stale_open_entry_does_not_hide_the_real_head(
    db: fm.Database, session: str | None
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    await Submission.admit_direct("p-2", session_id="s-1", input={})
    assert await Submission.settle_queued("p-1", "aborted")
    # p-1 is settled, yet an old entry says it is still the session's head.
    await db.client.zadd(index_key(db, "open_session", "s-1"), {"p-1": 1})
    assert [r.id for r in await Submission.list_runnable()] == ["p-2"]
    assert await Submission.claim("p-2", "w", session_id=session) is not None


async def test_has_unsettled_reads_the_rows(db: fm.Database) -> None:
    assert await Submission.has_unsettled("s-1") is False
    attempt = await running()
    assert await Submission.has_unsettled("s-1") is True
    assert await Submission.finish(attempt)
    assert await Submission.has_unsettled("s-1") is False
    await db.client.zadd(index_key(db, "open_session", "s-1"), {"p-1": 1})
    assert await Submission.has_unsettled("s-1") is False  # a stale entry is not a row


async def test_list_running_lists_only_running_rows(db: fm.Database) -> None:
    first = await running("p-1", "s-1")
    await running("p-2", "s-2")
    await Submission.admit_direct("p-3", session_id="s-3", input={})
    assert await Submission.finish(first)
    assert [r.id for r in await Submission.list_running()] == ["p-2"]


# Journals ---------------------------------------------------------------------------


async def test_begin_replaces_the_slot_and_raises_the_revision(db: fm.Database) -> None:
    attempt = await running()
    assert await Submission.journal_begin(attempt) == 1
    assert await Submission.journal_phase(attempt, "provider_started", stream_key="st-1")
    assert await Submission.journal_commit(attempt, "m1")
    assert await Submission.journal_begin(attempt) == 2  # the next turn
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert (journal.revision, journal.phase, journal.committed_leaf_id) == (
        2,
        "before_provider",
        None,
    )
    assert (journal.stream_key, journal.stream_consumed) == (None, False)
    assert await Submission.journal_commit(attempt, "m2") is True  # the next turn commits


async def test_a_turn_commits_once_and_a_retry_of_the_commit_succeeds(db: fm.Database) -> None:
    attempt = await running()
    await Submission.journal_begin(attempt)
    assert await Submission.journal_commit(attempt, "m42") is True
    assert await Submission.journal_commit(attempt, "m42") is True  # a retry
    assert await Submission.journal_commit(attempt, "m43") is False
    assert await Submission.journal_phase(attempt, "tool_request_recorded") is False
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert (journal.phase, journal.committed_leaf_id) == ("committed", "m42")


async def test_the_stream_key_is_recorded_and_consumed_once_only_for_it(
    db: fm.Database,
) -> None:
    attempt = await running()
    await Submission.journal_begin(attempt)
    assert await Submission.mark_stream_consumed(attempt, "st-1") is False  # none recorded
    assert await Submission.journal_phase(attempt, "provider_started", {"r": 1}, stream_key="st-1")
    assert await Submission.journal_phase(attempt, "provider_started", stream_key="st-2") is False
    assert await Submission.mark_stream_consumed(attempt, "st-2") is False  # another key
    assert await Submission.mark_stream_consumed(attempt, "st-1") is True
    assert await Submission.mark_stream_consumed(attempt, "st-1") is False  # once
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert (journal.stream_key, journal.stream_consumed, journal.detail) == (
        "st-1",
        True,
        {"r": 1},
    )


async def test_replace_attempt_moves_the_uncommitted_journal(db: fm.Database) -> None:
    first = await running()
    await Submission.journal_begin(first)
    await Submission.journal_phase(first, "provider_started", stream_key="st-1")
    second = await Submission.replace_attempt("p-1", first.attempt_id, "w2")
    assert second is not None
    assert await Submission.journal_phase(first, "tool_request_recorded") is False  # stale
    assert await Submission.journal_phase(second, "tool_request_recorded") is True
    assert await Submission.mark_stream_consumed(second, "st-1") is True
    assert await Submission.journal_commit(second, "m9") is True
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert (journal.attempt_id, journal.revision) == (second.attempt_id, 1)


async def test_a_committed_journal_stays_with_its_attempt(db: fm.Database) -> None:
    first = await running()
    await Submission.journal_begin(first)
    await Submission.journal_commit(first, "m1")
    second = await Submission.replace_attempt("p-1", first.attempt_id, "w2")
    assert second is not None
    journal = await Submission.read_journal("p-1")
    assert journal is not None
    assert journal.attempt_id == first.attempt_id
    assert await Submission.journal_phase(second, "provider_started") is False
    assert await Submission.journal_begin(second) == 2


async def test_a_journal_step_racing_the_hand_over_is_never_lost(
    db: fm.Database, redis_url: str, protocol: int
) -> None:
    other = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    try:
        for round_number in range(10):
            submission_id = f"p-{round_number}"
            first = await running(submission_id, f"s-{round_number}")
            await Submission.journal_begin(first)
            wrote, second = await asyncio.gather(
                Submission.journal_phase(first, "provider_started", stream_key="st", db=other),
                Submission.replace_attempt(submission_id, first.attempt_id, "w2", db=db),
            )
            assert second is not None
            journal = await Submission.read_journal(submission_id)
            assert journal is not None
            assert journal.attempt_id == second.attempt_id  # moved, whoever went first
            assert (journal.stream_key == "st") == wrote  # the step that landed is kept
    finally:
        await other.close()


async def test_a_journal_of_a_stale_attempt_writes_nothing(db: fm.Database) -> None:
    attempt = await running()
    assert await Submission.finish(attempt)
    assert await Submission.journal_begin(attempt) is None
    assert await Submission.read_journal("p-1") is None


# Stream chunks ----------------------------------------------------------------------


async def test_chunk_segments_first_writer_wins_and_read_back_sorted(db: fm.Database) -> None:
    stream = fm.EventStream("provider/st-1")
    assert await stream.append_chunk_segment(2, "c") is True
    assert await stream.append_chunk_segment(0, "a") is True
    assert await stream.append_chunk_segment(10, "k") is True
    assert await stream.append_chunk_segment(1, "b") is True
    assert await stream.append_chunk_segment(0, "other") is False  # never overwritten
    segments = await stream.chunk_segments()
    assert [(s.index, s.body) for s in segments] == [(0, "a"), (1, "b"), (2, "c"), (10, "k")]


async def test_racing_chunk_writers_leave_one_body(db: fm.Database) -> None:
    stream = fm.EventStream("provider/st-1")
    results = await asyncio.gather(*(stream.append_chunk_segment(0, f"w{i}") for i in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    (segment,) = await stream.chunk_segments()
    assert segment.body == f"w{results.index(True)}"


async def test_deleting_chunks_removes_them_all(db: fm.Database) -> None:
    stream = fm.EventStream("runs/r-1")
    await stream.create()
    for i in range(3):
        await stream.append_chunk_segment(i, str(i))
    assert await stream.delete_chunk_segments() == 3
    assert await stream.chunk_segments() == []
    await stream.append_chunk_segment(0, "again")
    assert await stream.delete() is True  # deleting the stream removes its chunks too
    assert await stream.chunk_segments() == []


@pytest.mark.parametrize("index", [-1, True, 1.0, "1"])
async def test_a_chunk_index_is_a_non_negative_int(db: fm.Database, index: object) -> None:
    with pytest.raises(fm.ConfigurationError, match="index"):
        await fm.EventStream("s").append_chunk_segment(index, "x")  # type: ignore[arg-type]
    assert await fm.EventStream("s").chunk_segments() == []


async def test_a_corrupted_chunk_index_is_a_decode_error(db: fm.Database) -> None:
    stream = fm.EventStream("provider/st-1")
    await stream.append_chunk_segment(0, "a")
    await db.client.hset(db.keys.stream("provider/st-1").chunks, "²", "x")
    with pytest.raises(fm.DecodeError, match="chunk segment index"):
        await stream.chunk_segments()


# Attempt markers --------------------------------------------------------------------


async def test_an_attempt_marker_insert_is_idempotent_and_keeps_the_first_time(
    db: fm.Database,
) -> None:
    first = await Submission.insert_attempt_marker("p-1", "a-1")
    later = first.created_at + dt.timedelta(milliseconds=3)

    async def clock_moved() -> bool:
        return await db.server_time() >= later

    await poll_until(clock_moved, "the server clock to move on")
    again = await Submission.insert_attempt_marker("p-1", "a-1")
    assert again.created_at == first.created_at
    markers = await Submission.list_attempt_markers()
    assert [(m.submission_id, m.attempt_id) for m in markers] == [("p-1", "a-1")]


async def test_an_attempt_marker_is_deleted_only_on_an_exact_match(db: fm.Database) -> None:
    await Submission.insert_attempt_marker("p-1", "a-1")
    await Submission.insert_attempt_marker("p-1", "a-2")
    await Submission.insert_attempt_marker("p-2", "a-1")
    assert await Submission.delete_attempt_marker("p-1", "a-3") is False
    assert await Submission.delete_attempt_marker("p-3", "a-1") is False
    assert await Submission.delete_attempt_marker("p-1", "a-1") is True
    assert await Submission.delete_attempt_marker("p-1", "a-1") is False
    left = {(m.submission_id, m.attempt_id) for m in await Submission.list_attempt_markers()}
    assert left == {("p-1", "a-2"), ("p-2", "a-1")}


async def test_attempt_markers_list_oldest_first(db: fm.Database) -> None:
    for i in range(3):
        await Submission.insert_attempt_marker(f"p-{i}", "a")
    markers = await Submission.list_attempt_markers()
    assert [m.created_at for m in markers] == sorted(m.created_at for m in markers)
    assert len(await Submission.list_attempt_markers(limit=2)) == 2


async def test_a_corrupted_marker_is_a_decode_error(db: fm.Database) -> None:
    await Submission.insert_attempt_marker("p-1", "a-1")
    await db.client.zadd(db.keys.attempt_markers(), {"{no": 1})
    with pytest.raises(fm.DecodeError, match="not a marker"):
        await Submission.list_attempt_markers()


async def test_a_corrupted_receipt_is_a_decode_error(db: fm.Database) -> None:
    await db.client.set(db.keys.receipt("d-1").receipt, "not json")
    with pytest.raises(fm.DecodeError, match="not a receipt"):
        await Submission.admit_dispatch("d-1", session_id="s-1", input={})
    assert await Submission.get("d-1") is None  # nothing admitted


# Session deletion -------------------------------------------------------------------


async def test_the_snapshot_callback_is_called_once_with_two_deleters(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    assert await Submission.settle_queued("p-1", "aborted")
    calls: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def delete_snapshot(session_id: str) -> None:
        calls.append(session_id)
        entered.set()
        await release.wait()  # the second deleter arrives while the first is inside

    first = asyncio.create_task(Submission.delete_session("s-1", delete_snapshot=delete_snapshot))
    await asyncio.wait_for(entered.wait(), 10)
    with pytest.raises(SessionDeletingError):
        await Submission.delete_session("s-1", delete_snapshot=delete_snapshot)
    release.set()
    assert await asyncio.wait_for(first, 10) == 1
    assert calls == ["s-1"]


async def test_a_failing_snapshot_callback_removes_the_marker_and_re_raises(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    assert await Submission.settle_queued("p-1", "aborted")

    async def broken(session_id: str) -> None:
        raise RuntimeError("snapshot store is down")

    with pytest.raises(RuntimeError, match="snapshot store is down"):
        await Submission.delete_session("s-1", delete_snapshot=broken)
    assert not await db.client.exists(db.keys.session_submissions("s-1").deleting)
    assert await Submission.interrupted_deletions() == []
    assert await Submission.get("p-1") is not None  # nothing deleted
    assert (await Submission.admit_direct("p-2", session_id="s-1", input={})).status == "queued"


async def test_deletion_is_not_blocked_by_a_stale_open_entry(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    assert await Submission.settle_queued("p-1", "aborted")
    await db.client.zadd(index_key(db, "open_session", "s-1"), {"p-1": 1})
    assert await Submission.delete_session("s-1") == 1


# Runs -------------------------------------------------------------------------------


async def test_run_listing_trusts_the_row_over_a_stale_status_entry(db: fm.Database) -> None:
    run = await fm.WorkflowRun.start("wf", run_id="r-1")
    await run.finish()
    await fm.WorkflowRun.start("wf", run_id="r-2")
    active = fm.WorkflowRun.__flue_spec__.equality_key(db.keys, "status", "active")
    await db.client.zadd(active, {"r-1": 1e15})  # stale, and first in newest-first order
    page = await fm.WorkflowRun.list(status="active", limit=1)
    assert [p.id for p in page.items] == ["r-2"]
    rest = await fm.WorkflowRun.list(status="active", limit=1, cursor=page.next_cursor)
    assert (rest.items, rest.next_cursor) == ([], None)  # r-1 is passed over


async def test_ending_a_run_repairs_its_compound_entries(db: fm.Database) -> None:
    run = await fm.WorkflowRun.start("wf", run_id="r-1")
    spec = fm.WorkflowRun.__flue_spec__
    stale = spec.compound_key(db.keys, ("workflow", "status"), ["wf", "errored"])
    await db.client.zadd(stale, {"r-1": 1})
    await run.finish()
    assert await db.client.zscore(stale, "r-1") is None
    assert (await fm.verify_collection(fm.WorkflowRun)).ok


# Streams ----------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "expected"), [(0, 100), (-5, 100), (5000, 1000), (7, 7)])
async def test_read_limits_default_and_clamp(db: fm.Database, limit: int, expected: int) -> None:
    stream = fm.EventStream("s")
    await stream.create()
    await stream.append_many([{"n": i} for i in range(1200)])
    result = await stream.read(after="-1", limit=limit)
    assert len(result.events) == expected
    assert result.up_to_date is False


async def test_closing_a_stream_records_when_it_closed(db: fm.Database) -> None:
    stream = fm.EventStream("s")
    await stream.create()
    before = await db.server_time()
    await stream.close()
    score = await db.client.zscore(db.keys.closed_streams(), "s")
    assert score is not None
    assert score >= before.timestamp() * 1000 - 1
    await stream.delete()
    assert await db.client.zscore(db.keys.closed_streams(), "s") is None


async def test_a_retried_close_lists_a_stream_a_crash_left_out_of_the_closed_set(
    db: fm.Database,
) -> None:
    """The closed set is in another Cluster slot than the stream, so it is written after
    the close script: closing again (what a caller does after a lost reply) adds it with
    the time the stream closed."""
    stream = fm.EventStream("s")
    await stream.create()
    assert await stream.close() is True
    first = await db.client.zscore(db.keys.closed_streams(), "s")
    await db.client.zrem(db.keys.closed_streams(), "s")  # the crash between the two steps
    assert await stream.close() is False  # closed already
    assert await db.client.zscore(db.keys.closed_streams(), "s") == first


async def test_expired_listing_trusts_the_row(db: fm.Database) -> None:
    attempt = await running()
    lease = Submission.__flue_spec__.range_key(db.keys, "lease_expires_at")
    await db.client.zadd(lease, {"p-1": 0})  # a stale score: expired long ago
    row = await Submission.get("p-1")
    assert row is not None
    assert row.lease_expires_at is not None
    assert row.lease_expires_at > dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    assert await Submission.list_expired() == []
    assert await Submission.finish(attempt)


async def test_the_first_event_is_offset_zero_and_the_second_one(db: fm.Database) -> None:
    """Flue's event stream store contract numbers offsets from ``..._0000``."""
    stream: fm.EventStream[dict[str, int]] = fm.EventStream("agents/offsets")
    await stream.create()
    assert (await stream.meta()).head == "-1"  # type: ignore[union-attr]
    first = await stream.append({"n": 0})
    second = await stream.append({"n": 1})
    assert (first, second) == (
        "0000000000000000_0000000000000000",
        "0000000000000000_0000000000000001",
    )
    assert (await stream.meta()).head == second  # type: ignore[union-attr]
    after_first = await stream.read(after=first)
    assert [(e.offset, e.data) for e in after_first.events] == [(second, {"n": 1})]
    assert after_first.next_offset == second
    assert [e.offset for e in (await stream.read(after="-1")).events] == [first, second]
