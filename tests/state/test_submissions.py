"""Submissions on a real server: admission, heads, claims, leases, settling, journal."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

import flue_models as fm
from flue_models.model.codec import EPOCH
from flue_models.state import submission as sub
from flue_models.state.submission import Submission
from tests.integration.roundtrips import count_round_trips, load_scripts, on_cluster
from tests.waiting import poll_until

EXPIRED = dt.timedelta(seconds=-1)  # a lease that is over as soon as it is granted

SPEC = Submission.__flue_spec__


@pytest.fixture
async def other(db: fm.Database, redis_url: str, protocol: int) -> AsyncIterator[fm.Database]:
    """A second, independent client on the same prefix."""
    second = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    yield second
    await second.close()


async def sequence_counter(db: fm.Database, session_id: str = "s-1") -> int:
    """The sequence counter of the session's bucket (the last number it gave out)."""
    value = await db.client.get(db.keys.session_submissions(session_id).sequence)
    return int(value or 0)


async def test_admission_is_idempotent_on_the_id(db: fm.Database) -> None:
    first = await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
    assert first.created
    assert first.submission is not None
    assert first.submission.status == "queued"
    assert first.submission.sequence == await sequence_counter(db)
    replay = await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
    assert (replay.created, replay.conflict) == (False, False)
    assert replay.submission == first.submission
    assert await sequence_counter(db) == first.submission.sequence  # the replay took none


async def test_an_admission_is_accepted_at_the_time_its_sequence_reads_as(
    db: fm.Database,
) -> None:
    """The script gives the sequence (the session's counter, or the server's clock in µs
    when that is larger) and ``accepted_at`` at the time that number reads as."""
    before = await db.server_time()
    row = await Submission.admit_direct("p-1", session_id="s-1", input={})
    after = await db.server_time()
    assert before <= row.accepted_at <= after
    assert row.accepted_at == EPOCH + dt.timedelta(microseconds=row.sequence)
    stored = await Submission.get("p-1")
    assert stored is not None
    assert (stored.accepted_at, stored.sequence) == (row.accepted_at, row.sequence)


@pytest.mark.parametrize(
    "change", [{"input": {"task": 2}}, {"session_id": "s-other"}], ids=["payload", "session"]
)
async def test_admission_conflicts(db: fm.Database, change: dict[str, object]) -> None:
    await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
    args: dict[str, object] = {"session_id": "s-1", "input": {"task": 1}, **change}
    result = await Submission.admit_dispatch("d-1", **args)  # type: ignore[arg-type]
    assert result.conflict  # a result for a dispatch
    with pytest.raises(fm.AdmissionConflictError, match="d-1"):
        await Submission.admit_direct("d-1", **args)  # type: ignore[arg-type]
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    kind_change = await Submission.admit_dispatch("p-1", session_id="s-1", input={})
    assert kind_change.conflict  # same id, same payload, another kind
    last = await Submission.get("p-1")
    assert last is not None
    assert await sequence_counter(db) == last.sequence  # the conflicts took none


async def test_reading_one_submission_is_one_round_trip(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={"prompt": "hi"})
    await Submission.get("p-1")  # warm the connection
    with count_round_trips(db, monkeypatch) as trips:
        row = await Submission.get("p-1")
    assert row is not None
    assert row.input == {"prompt": "hi"}
    # The row (asked of every bucket: the id alone does not name it) with the clock; on
    # a cluster, one request to each of the three primaries.
    assert trips[0] == (3 if on_cluster(db) else 1)


async def test_a_new_admission_is_one_write_on_one_server(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One server: the write itself is guarded by the id's key in every other bucket,
    its receipt and the session's deletion marker (one atomic call). A cluster reads
    the row in every bucket, the clock and the receipt in one batch, the receipt once
    more, then writes."""
    await Submission.admit_direct("p-0", session_id="s-0", input={})  # warm: connections
    await load_scripts(db, "save")  # on every primary of a cluster too
    with count_round_trips(db, monkeypatch) as trips:
        admitted = await Submission.admit_dispatch("d-1", session_id="s-1", input={"n": 1})
    assert admitted.created
    assert trips[0] == (3 + 1 + 1 if on_cluster(db) else 1)
    with count_round_trips(db, monkeypatch) as trips:
        replay = await Submission.admit_dispatch("d-1", session_id="s-1", input={"n": 1})
    assert (replay.created, replay.conflict) == (False, False)
    assert replay.submission == admitted.submission
    # One server: the refused write, then the read that answers (a cluster: the read,
    # one request per primary; the row found, no second look at the receipt).
    assert trips[0] == (3 if on_cluster(db) else 2)


@pytest.mark.parametrize("given", [False, True], ids=["by-id", "with-session"])
async def test_one_runnable_head_per_session_in_admission_order(
    db: fm.Database, given: bool
) -> None:
    for submission_id, session_id in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("c1", "C")]:
        await Submission.admit_direct(submission_id, session_id=session_id, input={})
    assert [r.id for r in await Submission.list_runnable()] == ["a1", "b1", "c1"]
    session: dict[str, Any] = {"session_id": "A"} if given else {}
    assert await Submission.claim("a2", "w", **session) is None  # not its session's head
    attempt = await Submission.claim("a1", "w", **session)
    assert attempt is not None
    assert [r.id for r in await Submission.list_runnable()] == [
        "b1",
        "c1",
    ]  # A's head is running
    assert await Submission.finish(attempt)
    assert [r.id for r in await Submission.list_runnable()] == ["b1", "a2", "c1"]  # by sequence


async def test_a_claim_given_its_session_reads_once_and_writes_once(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row in its session's bucket, the clock and the session's first window of
    heads in one batch, then the write."""
    for n in range(3):
        await Submission.admit_direct(f"p-{n}", session_id=f"s-{n}", input={})
    assert await Submission.claim("p-0", "w", session_id="s-0")  # warm: connections
    await load_scripts(db, "save")
    with count_round_trips(db, monkeypatch) as trips:
        attempt = await Submission.claim("p-1", "w", session_id="s-1")
    assert attempt is not None
    assert attempt.session_id == "s-1"
    # On a cluster the batch is one request to the bucket's primary and one for TIME.
    assert trips[0] == (2 + 1 if on_cluster(db) else 2)
    with count_round_trips(db, monkeypatch) as trips:
        assert await Submission.claim("p-2", "w")  # by id alone: every bucket, then heads
    assert trips[0] == (3 + 2 if on_cluster(db) else 3)


async def test_a_claim_given_another_session_finds_nothing_and_writes_nothing(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    before = await Submission.get("p-1")
    assert before is not None
    # Another session, and one whose bucket is the row's own: neither is the row's.
    same_bucket = next(
        f"s-{n}"
        for n in range(2, 10_000)
        if SPEC.keys_of(db.keys, f"s-{n}").bucket == SPEC.keys_of(db.keys, "s-1").bucket
    )
    for session_id in ("s-2", same_bucket):
        assert await Submission.claim("p-1", "w", session_id=session_id) is None
    after = await Submission.get("p-1")
    assert after is not None
    assert (after.status, after.version) == ("queued", before.version)


async def test_of_many_racing_claimers_on_two_clients_exactly_one_wins(
    db: fm.Database, other: fm.Database
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempts = await asyncio.gather(
        *(
            Submission.claim(
                "p-1", f"worker-{i}", db=(db, other)[i % 2], session_id="s-1" if i % 3 else None
            )
            for i in range(20)
        )
    )
    winners = [a for a in attempts if a is not None]
    assert len(winners) == 1
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.owner_id, row.attempt_id) == (
        "running",
        winners[0].owner_id,
        winners[0].attempt_id,
    )
    assert row.attempt_count == 1


async def test_a_claim_sets_attempt_lease_and_timeout_from_the_server_clock(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    before = await db.server_time()
    attempt = await Submission.claim("p-1", "w", lease=dt.timedelta(seconds=30))
    after = await db.server_time()
    assert attempt is not None
    row = await Submission.get("p-1")
    assert row is not None
    assert (
        before + dt.timedelta(seconds=30)
        <= attempt.lease_expires_at
        <= after + dt.timedelta(seconds=30)
    )
    assert row.timeout_at is not None
    assert before + sub.DEFAULT_TIMEOUT <= row.timeout_at <= after + sub.DEFAULT_TIMEOUT
    first_timeout = row.timeout_at
    assert await Submission.requeue(attempt)
    assert await Submission.claim("p-1", "w") is not None
    again = await Submission.get("p-1")
    assert again is not None
    assert (again.timeout_at, again.attempt_count) == (first_timeout, 2)  # set once


async def test_input_applied_is_marked_once_and_stale_attempts_get_false(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    assert await Submission.mark_input_applied(attempt) is True
    assert await Submission.mark_input_applied(attempt) is False
    replaced = await Submission.replace_attempt("p-1", attempt.attempt_id, "w2")
    assert replaced is not None
    assert await Submission.mark_input_applied(attempt) is False  # stale
    # The hand-over keeps the stamp: the recovering attempt knows the input was applied.
    assert await Submission.mark_input_applied(replaced) is False
    row = await Submission.get("p-1")
    assert row is not None
    assert row.input_applied_at is not None


async def test_requeue_is_for_the_owner_only(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    forged = dataclasses.replace(attempt, owner_id="intruder")
    assert await Submission.requeue(forged) is False
    assert await Submission.requeue(attempt) is True  # what it clears: test_flue_contract
    assert await Submission.finish(attempt) is False  # the requeued attempt is stale


async def test_renew_leases_only_for_running_rows_of_that_owner(db: fm.Database) -> None:
    for i in range(3):
        await Submission.admit_direct(f"p-{i}", session_id=f"s-{i}", input={})
    mine = await Submission.claim("p-0", "me", lease=dt.timedelta(seconds=5))
    theirs = await Submission.claim("p-1", "them")
    assert mine is not None
    assert theirs is not None
    renewed = await Submission.renew_leases(
        "me", ["p-0", "p-1", "p-2", "missing"], lease=dt.timedelta(minutes=5)
    )
    assert renewed == ["p-0"]
    row = await Submission.get("p-0")
    assert row is not None
    assert row.lease_expires_at is not None
    assert row.lease_expires_at > mine.lease_expires_at


async def test_expired_leases_are_listed_and_handed_over(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    await Submission.admit_direct("p-2", session_id="s-2", input={})
    expired = await Submission.claim("p-1", "w", lease=EXPIRED)
    live = await Submission.claim("p-2", "w", lease=dt.timedelta(minutes=5))
    assert expired is not None
    assert live is not None
    assert [r.id for r in await Submission.list_expired()] == ["p-1"]
    handed = await Submission.replace_attempt("p-1", expired.attempt_id, "w2")
    assert handed is not None
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.owner_id, row.attempt_id, row.attempt_count) == ("w2", handed.attempt_id, 2)
    assert await Submission.replace_attempt("p-1", expired.attempt_id, "w3") is None  # stale
    assert await Submission.finish(expired) is False
    assert await Submission.list_expired() == []


async def test_the_first_terminal_state_wins(db: fm.Database, other: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w")
    assert attempt is not None
    results = await asyncio.gather(
        Submission.finish(attempt, db=db),
        Submission.fail(attempt, "boom", db=other),
        Submission.finish(attempt, db=other),
    )
    row = await Submission.get("p-1")
    assert row is not None
    assert row.status == "settled"
    # One outcome won; the calls that asked for it report success (an identical call is
    # a retry of it), the other outcome reports failure.
    won = row.outcome == "completed"
    assert results == [won, not won, won]
    assert row.settled_at is not None
    assert row.open_session is None
    assert (await fm.verify_collection(fm.Submission)).ok


async def test_settle_queued_racing_a_claim_exactly_one_wins(
    db: fm.Database, other: fm.Database
) -> None:
    for round_number in range(5):
        submission_id = f"p-{round_number}"
        await Submission.admit_direct(submission_id, session_id=f"s-{round_number}", input={})
        settled, claimed = await asyncio.gather(
            Submission.settle_queued(submission_id, "aborted", "user cancelled", db=db),
            Submission.claim(submission_id, "w", db=other),
        )
        assert settled != (claimed is not None)
    assert await Submission.settle_queued("missing", "aborted") is False


async def test_deleting_a_session(db: fm.Database) -> None:
    await Submission.admit_dispatch("d-1", session_id="s-1", input={"n": 1})
    await Submission.admit_direct("p-2", session_id="s-1", input={})
    with pytest.raises(fm.SessionBusyError, match="2 queued or running"):
        await Submission.delete_session("s-1")
    attempt = await Submission.claim("d-1", "w")
    assert attempt is not None
    await Submission.journal_begin(attempt)
    await Submission.finish(attempt)
    accepted_at = (await Submission.get("d-1")).accepted_at  # type: ignore[union-attr]
    with pytest.raises(fm.SessionBusyError):  # p-2 is still queued
        await Submission.delete_session("s-1")
    assert await Submission.settle_queued("p-2", "aborted")
    assert await Submission.delete_session("s-1") == 2
    assert await Submission.get("d-1") is None
    assert not await db.client.exists(db.keys.journal("d-1", "s-1"))
    receipt = await Submission.admit_dispatch("d-1", session_id="s-1", input={"n": 1})
    assert (receipt.created, receipt.conflict, receipt.submission) == (False, False, None)
    assert receipt.receipt is not None
    assert receipt.receipt["accepted_at"] == accepted_at.isoformat(timespec="microseconds")
    assert await Submission.get("d-1") is None  # not run again
    assert await Submission.interrupted_deletions() == []
    assert (await fm.verify_collection(fm.Submission)).ok


async def test_an_interrupted_deletion_blocks_admission_is_listed_and_resumes(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    assert await Submission.settle_queued("p-1", "aborted")
    # What delete_session writes first, left behind by a crash right after it:
    await db.client.set(db.keys.session_submissions("s-1").deleting, "1")
    await db.client.sadd(db.keys.session_submissions("s-1").deletions, "s-1")
    with pytest.raises(fm.SessionDeletingError, match="s-1"):
        await Submission.admit_direct("p-2", session_id="s-1", input={})
    assert await Submission.interrupted_deletions() == ["s-1"]
    assert await Submission.delete_session("s-1") == 1
    assert await Submission.interrupted_deletions() == []
    assert (await Submission.admit_direct("p-2", session_id="s-1", input={})).status == "queued"


async def test_a_malformed_row_is_settled_as_failed_and_listing_goes_on(db: fm.Database) -> None:
    await Submission.admit_direct("bad", session_id="s-bad", input={})
    await Submission.admit_direct("good", session_id="s-good", input={})
    key = SPEC.record_key(db.keys, "bad", "s-bad")
    await db.client.hset(key, "accepted_at", "not a time")
    assert [r.id for r in await Submission.list_runnable()] == ["good"]
    raw = await db.client.hgetall(key)
    assert raw[b"status"] == b"settled"
    assert raw[b"outcome"] == b"failed"
    assert b"malformed" in raw[b"error"]
    home = SPEC.keys_of(db.keys, "s-bad")
    assert await db.client.zscore(SPEC.equality_key(home, "status", "queued"), "bad") is None
    open_key = db.keys.session_submissions("s-bad").open
    assert await db.client.zscore(open_key, "bad") is None
    assert [r.id for r in await Submission.list_runnable()] == ["good"]


@pytest.mark.parametrize("listing", ["list_running", "list_expired"])
async def test_a_malformed_running_row_never_hides_the_others(
    db: fm.Database, listing: str
) -> None:
    for name in ("bad", "good"):
        await Submission.admit_direct(name, session_id=f"s-{name}", input={})
        assert await Submission.claim(name, owner_id="w", lease=EXPIRED)
    key = SPEC.record_key(db.keys, "bad", "s-bad")
    await db.client.hset(key, "attempt_count", "lots")
    assert [r.id for r in await getattr(Submission, listing)()] == ["good"]
    raw = await db.client.hgetall(key)
    assert raw[b"status"] == b"settled"  # quarantined as a claim would
    assert b"malformed" in raw[b"error"]


async def test_listing_runnable_heads_takes_three_round_trips(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        await Submission.admit_direct(f"p-{i}", session_id=f"s-{i % 10}", input={})
    await Submission.list_runnable()  # warm: connection and script loaded
    with count_round_trips(db, monkeypatch) as trips:
        heads = await Submission.list_runnable()
    assert [r.id for r in heads] == [f"p-{i}" for i in range(10)]
    # The queued ids (one script call per bucket at once: the first goes out alone, the
    # others together behind it, on a cluster one pipeline per primary), the rows with
    # the clock, the sessions' heads (on a cluster one request per primary for each).
    assert trips[0] == (1 + 3 + 2 * 3 if on_cluster(db) else 4)


async def test_one_deletion_at_a_time_and_only_settled_rows_go(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        await Submission.admit_direct(f"p-{n}", session_id="s-1", input={"n": n})
        assert await Submission.settle_queued(f"p-{n}", "aborted")
    marker = db.keys.session_submissions("s-1").deleting
    id_page = fm.Query.id_page
    seen: list[str] = []

    async def meanwhile(self: fm.Query[Any], limit: int = 50, cursor: str | None = None) -> Any:
        if self.model is Submission and not seen:
            seen.append("second deleter")
            with pytest.raises(fm.SessionDeletingError):  # a second deleter is refused...
                await Submission.delete_session("s-1")
            assert await db.client.exists(marker)  # ...and leaves the first one's marker
            with pytest.raises(fm.SessionDeletingError):  # admissions stay refused
                await Submission.admit_dispatch("d-new", session_id="s-1", input={})
            # A row that is not settled (here: made queued behind the deletion's back)
            # is never deleted by it.
            row = await Submission.get("p-1")
            assert row is not None
            await row.update(status="queued", outcome=None, settled_at=None)
        return await id_page(self, limit, cursor)

    monkeypatch.setattr(fm.Query, "id_page", meanwhile)
    assert await Submission.delete_session("s-1") == 2
    assert seen == ["second deleter"]
    assert not await db.client.exists(marker)
    survivor = await Submission.get("p-1")
    assert survivor is not None
    assert survivor.status == "queued"
    assert await Submission.interrupted_deletions() == []


async def test_a_crashed_deletion_blocks_admissions_only_until_its_lease_ends(
    db: fm.Database,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    assert await Submission.settle_queued("p-1", "aborted")
    marker = db.keys.session_submissions("s-1").deleting
    await db.client.set(marker, "a-crashed-deleter", px=60_000)  # as a crash leaves it
    await db.client.sadd(db.keys.session_submissions("s-1").deletions, "s-1")
    with pytest.raises(fm.SessionDeletingError):
        await Submission.delete_session("s-1")  # it might still be running
    await db.client.pexpire(marker, 1)  # its lease runs out

    async def gone() -> bool:
        return not await db.client.exists(marker)

    await poll_until(gone, "the crashed deletion's lease to end")
    assert await Submission.interrupted_deletions() == ["s-1"]
    assert await Submission.delete_session("s-1") == 1  # resumed
    assert await Submission.interrupted_deletions() == []


async def test_retries_after_a_lost_reply_tell_the_truth(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "worker-a")
    assert attempt is not None
    # The claim's reply was lost; the worker claims again: it holds the submission.
    assert await Submission.claim("p-1", "worker-a") == attempt
    assert await Submission.claim("p-1", "worker-b") is None  # others still lose
    assert await Submission.fail(attempt, error={"message": "boom"})
    # The settle's reply was lost; the same call again reports what happened.
    assert await Submission.fail(attempt, error={"message": "boom"})
    assert not await Submission.finish(attempt)  # another outcome: the first one won
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.outcome) == ("settled", "failed")


async def test_a_slow_admission_lands_behind_a_later_one_and_never_runs_beside_it(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A admits first but lands after B was admitted and claimed: A's number is taken as
    it lands, so B stays the head and A cannot be claimed while B runs."""
    write = sub.SubmissionRow._write
    claimed: list[sub.Attempt] = []

    async def slow_first(self: Any, db_: fm.Database, *args: Any, **kwargs: Any) -> None:
        if self.id == "A" and not claimed:
            await Submission.admit_direct("B", session_id="s-1", input={})
            attempt = await Submission.claim("B", "worker-b")
            assert attempt is not None
            claimed.append(attempt)
        await write(self, db_, *args, **kwargs)

    monkeypatch.setattr(sub.SubmissionRow, "_write", slow_first)
    a = await Submission.admit_direct("A", session_id="s-1", input={})
    b = await Submission.get("B")
    assert b is not None
    assert a.sequence > b.sequence  # order of landing
    assert await Submission.claim("A", "worker-a") is None  # B is the running head
    assert await Submission.list_runnable() == []
    assert await Submission.finish(claimed[0])
    assert [r.id for r in await Submission.list_runnable()] == ["A"]


async def test_racing_exact_replays_consume_no_sequence_number(db: fm.Database) -> None:
    results = await asyncio.gather(
        *(Submission.admit_dispatch("d-1", session_id="s-1", input={"n": 1}) for _ in range(20))
    )
    assert sum(r.created for r in results) == 1
    taken = await sequence_counter(db)
    assert {r.submission.sequence for r in results if r.submission} == {taken}
    following = await Submission.admit_direct("p-2", session_id="s-1", input={})
    assert following.sequence > taken
    assert await sequence_counter(db) == following.sequence


async def test_a_row_says_whether_its_lease_expired_by_the_server_clock(db: fm.Database) -> None:
    await Submission.admit_direct("p-lease", session_id="s-lease", input={})
    queued = await Submission.get("p-lease")
    assert queued is not None
    assert not queued.lease_expired(await db.server_time())  # not running: no lease
    await Submission.claim("p-lease", "w", lease=dt.timedelta(0))  # over at once
    running = await Submission.get("p-lease")
    assert running is not None
    assert running.lease_expires_at is not None
    assert not running.lease_expired(running.lease_expires_at)  # not before its end
    later = running.lease_expires_at + dt.timedelta(microseconds=1)
    assert running.lease_expired(later)
    assert [row.id for row in await Submission.list_expired()] == ["p-lease"]


# Steps from the kept row ---------------------------------------------------------------


async def test_steps_of_an_attempt_write_from_the_row_its_claim_kept(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim keeps the row it wrote; the journal steps keep its version current; so
    marking the input applied and finishing each take one round trip (the write alone),
    and leave what a read-then-write would: the server's time, exact indexes."""
    await Submission.admit_direct("p-0", session_id="s-0", input={})
    warm = await Submission.claim("p-0", "w", session_id="s-0")  # warm: connections
    assert warm is not None
    assert await Submission.finish(warm)
    await load_scripts(db, "save", "journal")
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", session_id="s-1")
    assert attempt is not None
    assert await Submission.journal_begin(attempt) == 1
    before = await db.server_time()
    with count_round_trips(db, monkeypatch) as trips:
        assert await Submission.mark_input_applied(attempt)
    assert trips[0] == 1
    assert await Submission.journal_phase(attempt, "provider_started")
    assert await Submission.journal_commit(attempt, "m1")
    with count_round_trips(db, monkeypatch) as trips:
        assert await Submission.finish(attempt)
    assert trips[0] == 1
    after = await db.server_time()
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.outcome) == ("settled", "completed")
    assert row.input_applied_at is not None
    assert row.settled_at is not None
    assert before <= row.input_applied_at <= row.settled_at <= after
    assert (await fm.verify_collection(Submission)).ok
    assert await Submission.finish(attempt) is True  # a retry: read, and done


@pytest.mark.parametrize("meanwhile", ["a write", "a journal step"])
async def test_a_kept_row_the_store_moved_past_is_refused_and_the_step_reads(
    db: fm.Database, other: fm.Database, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """Another process writes the row after the claim (a version-checked save of its own
    copy, a journal step): the write from the kept row is refused by its version check,
    and the step reads the row and writes again."""
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", session_id="s-1", lease=dt.timedelta(seconds=5))
    assert attempt is not None
    await load_scripts(db, "save")
    if meanwhile == "a write":  # its own copy, read and written there
        (row,), now = await Submission._read_many(other, ["p-1"], ["s-1"])
        assert row is not None
        row.lease_expires_at = now + dt.timedelta(minutes=5)
        await row._write(other)
    else:  # as another process would: its step does not reach this process's row
        journal = other.scripts
        keys = SPEC.keys_of(other.keys, "s-1")
        row_keys = [keys.record("submission", "p-1"), keys.journal("p-1")]
        counter = keys.version_counter("submission")
        args = ["begin", attempt.attempt_id]
        assert await journal.call("journal", keys=[*row_keys, counter], args=args, unsafe=True)
    with count_round_trips(db, monkeypatch) as trips:
        assert await Submission.finish(attempt)
    # The refused write, the read (on a cluster: the row's primary, and TIME), the write.
    assert trips[0] == (4 if on_cluster(db) else 3)
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.outcome) == ("settled", "completed")
    assert (await fm.verify_collection(Submission)).ok


async def test_a_renewal_keeps_the_renewed_row_for_the_attempts_next_step(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process's own renewal is the row's latest write: the finish after it plans
    from the renewed row, in one round trip."""
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", session_id="s-1", lease=dt.timedelta(seconds=5))
    assert attempt is not None
    await load_scripts(db, "save")
    lease = dt.timedelta(minutes=5)
    assert await Submission.renew_leases("w", ["p-1"], lease=lease) == ["p-1"]
    with count_round_trips(db, monkeypatch) as trips:
        assert await Submission.finish(attempt)
    assert trips[0] == 1
    row = await Submission.get("p-1")
    assert row is not None
    assert (row.status, row.outcome, row.lease_expires_at) == ("settled", "completed", None)
    assert (await fm.verify_collection(Submission)).ok


async def test_a_quarantined_row_is_never_written_over_from_a_kept_row(
    db: fm.Database,
) -> None:
    """A row made unreadable after its claim is settled as failed by the next read
    (quarantine), which also gives it a version no copy holds: the attempt's finish
    from its kept row is refused, reads, and reports False; the quarantine stands."""
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", session_id="s-1")
    assert attempt is not None
    key = SPEC.record_key(db.keys, "p-1", "s-1")
    await db.client.hset(key, "status", "bogus")
    version = int(await db.client.hget(key, "version"))
    assert await Submission.get("p-1") is None  # quarantined by the read
    assert int(await db.client.hget(key, "version")) > version  # a version no copy holds
    assert await Submission.finish(attempt) is False
    raw = await db.client.hgetall(key)
    assert (raw[b"status"], raw[b"outcome"]) == (b"settled", b"failed")
    assert b"malformed" in raw[b"error"]
    assert b"settled_at" not in raw  # the finish wrote nothing


async def test_a_requeue_from_the_kept_row_ends_the_attempt(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    attempt = await Submission.claim("p-1", "w", session_id="s-1")
    assert attempt is not None
    await load_scripts(db, "save")
    with count_round_trips(db, monkeypatch) as trips:
        assert await Submission.requeue(attempt)
    assert trips[0] == 1
    assert await Submission.finish(attempt) is False  # read: the attempt is over
    again = await Submission.claim("p-1", "w2", session_id="s-1")
    assert again is not None
    assert (await fm.verify_collection(Submission)).ok
