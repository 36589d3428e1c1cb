"""WorkflowRun on a real server: idempotent start, first terminal state, listing."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import flue_models as fm
from flue_models import EndResult, WorkflowRun
from tests.conftest import RedisServers
from tests.integration.roundtrips import connection_class_of, count_round_trips
from tests.waiting import within

UTC = dt.UTC
PLUS5 = dt.timezone(dt.timedelta(hours=5))


async def test_start_is_idempotent_and_first_writer_wins(db: fm.Database) -> None:
    first = await WorkflowRun.start("summarize", input={"n": 1}, run_id="r-1")
    replay = await WorkflowRun.start("summarize", input={"n": 2}, run_id="r-1")
    assert replay.id == first.id
    assert replay.input == {"n": 1}
    assert replay.started_at == first.started_at
    assert await WorkflowRun.find().count() == 1


async def test_racing_starts_on_two_clients_make_one_run(
    db: fm.Database, redis_url: str, protocol: int
) -> None:
    other = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    try:
        starts = [
            WorkflowRun.start("w", input={"client": i % 2}, run_id="r-race", db=(db, other)[i % 2])
            for i in range(10)
        ]
        runs = await asyncio.gather(*starts)
        assert len({(r.input["client"], r.started_at) for r in runs}) == 1
        assert await WorkflowRun.find().count() == 1
    finally:
        await other.close()


async def test_a_replay_never_revives_a_finished_run(db: fm.Database) -> None:
    run = await WorkflowRun.start("w", run_id="r-done")
    await run.finish(result={"ok": True})
    replay = await WorkflowRun.start("w", run_id="r-done")
    assert replay.status == "completed"
    assert replay.result == {"ok": True}


async def test_started_at_defaults_to_the_server_clock(db: fm.Database) -> None:
    before = await db.server_time()
    run = await WorkflowRun.start("w")
    after = await db.server_time()
    assert before <= run.started_at <= after


async def test_finish_fail_and_cancel_end_a_run_once(db: fm.Database) -> None:
    run = await WorkflowRun.start("w", started_at=dt.datetime(2026, 1, 1, tzinfo=UTC))
    assert await run.finish(result={"summary": "s"}) is EndResult.ENDED
    assert run.status == "completed"
    assert run.result == {"summary": "s"}
    assert run.ended_at is not None
    assert run.duration_ms == (run.ended_at - run.started_at) // dt.timedelta(milliseconds=1)
    assert await run.fail(error="late") is EndResult.ALREADY_ENDED
    assert await run.cancel() is EndResult.ALREADY_ENDED
    stored = await WorkflowRun.get(run.id)
    assert stored is not None
    assert (stored.status, stored.error) == ("completed", None)

    other = await WorkflowRun.start("w")
    assert await WorkflowRun.fail_id(other.id, error={"message": "boom"}) is EndResult.ENDED
    third = await WorkflowRun.start("w")
    assert await WorkflowRun.cancel_id(third.id) is EndResult.ENDED
    statuses = {r.id: r.status for r in await WorkflowRun.find().all()}
    assert statuses[other.id] == "errored"
    assert statuses[third.id] == "cancelled"


async def test_ending_an_unknown_run_does_nothing_and_says_so(db: fm.Database) -> None:
    assert await WorkflowRun.finish_id("nope", result=1) is EndResult.NOT_FOUND
    assert await WorkflowRun.fail_id("nope") is EndResult.NOT_FOUND
    assert await WorkflowRun.cancel_id("nope") is EndResult.NOT_FOUND
    assert [
        k async for k in db.client.scan_iter(match=db.keys.buckets_pattern("workflow_run"))
    ] == []


async def test_racing_ends_on_two_clients_leave_one_status(
    db: fm.Database, redis_url: str, protocol: int
) -> None:
    other = await fm.connect(redis_url, key_prefix=db.keys.prefix, protocol=protocol)
    try:
        for attempt in range(5):
            run = await WorkflowRun.start("w", run_id=f"r-end-{attempt}")
            outcomes = await asyncio.gather(
                WorkflowRun.finish_id(run.id, result=1, db=db),
                WorkflowRun.fail_id(run.id, error="x", db=other),
                WorkflowRun.cancel_id(run.id, db=other),
                WorkflowRun.finish_id(run.id, result=2, db=db),
            )
            assert outcomes.count(EndResult.ENDED) == 1
            memberships = [
                await db.client.zscore(
                    WorkflowRun.__flue_spec__.equality_key(
                        WorkflowRun.__flue_spec__.keys_of(db.keys, run.id), "status", s
                    ),
                    run.id,
                )
                for s in ("active", "completed", "errored", "cancelled")
            ]
            assert sum(m is not None for m in memberships) == 1
        assert (await fm.verify_collection(WorkflowRun)).ok
    finally:
        await other.close()


async def test_listing_is_newest_first_with_ties_by_id_descending(db: fm.Database) -> None:
    same = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    for run_id in ("a", "c", "b"):
        await WorkflowRun.start("w", run_id=run_id, started_at=same)
    await WorkflowRun.start("w", run_id="newest", started_at=same + dt.timedelta(seconds=1))
    await WorkflowRun.start("w", run_id="oldest", started_at=same - dt.timedelta(seconds=1))
    page = await WorkflowRun.list()
    assert [p.id for p in page.items] == ["newest", "c", "b", "a", "oldest"]
    assert page.next_cursor is None


async def test_listing_across_pages_with_non_latin_names_and_offsets(db: fm.Database) -> None:
    base = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    expected = []
    for i in range(25):
        # Alternate zones: the instant decides the order, not the wall-clock text.
        moment = base + dt.timedelta(minutes=i)
        given = moment.astimezone(PLUS5) if i % 2 else moment
        run = await WorkflowRun.start("日報", run_id=f"r{i:02d}", started_at=given)
        expected.append(run.id)
        await WorkflowRun.start("other", started_at=given)
    seen, cursor = [], None
    while True:
        page = await WorkflowRun.list(workflow="日報", limit=7, cursor=cursor)
        seen += [p.id for p in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(expected))


async def test_listing_filters_by_status_workflow_and_the_pair(db: fm.Database) -> None:
    for i in range(12):
        run = await WorkflowRun.start("a" if i % 2 else "b")
        if i % 3 == 0:
            await run.fail(error="x")
    assert len((await WorkflowRun.list(status="errored")).items) == 4
    assert len((await WorkflowRun.list(workflow="a")).items) == 6
    pair = await WorkflowRun.list(status="errored", workflow="a")
    assert {(p.workflow, p.status) for p in pair.items} == {("a", "errored")}
    assert len(pair.items) == 2
    plan = await WorkflowRun.find(
        WorkflowRun.status == "errored", WorkflowRun.workflow == "a"
    ).explain()
    assert "workflow+status" in plan.splitlines()[0]


async def test_listing_limits(db: fm.Database) -> None:
    await WorkflowRun.save_many(
        [
            WorkflowRun(
                workflow="w",
                started_at=dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i),
            )
            for i in range(1005)
        ]
    )
    assert len((await WorkflowRun.list()).items) == 100
    assert len((await WorkflowRun.list(limit=0)).items) == 100
    assert len((await WorkflowRun.list(limit=-5)).items) == 100
    assert len((await WorkflowRun.list(limit=5000)).items) == 1000
    assert len((await WorkflowRun.list(limit=3)).items) == 3


async def test_pointers_are_light_and_get_is_whole(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await WorkflowRun.start("w", input={"big": "x" * 10_000})
    await run.finish(result={"also": "big"})
    pointer = await WorkflowRun.lookup(run.id)
    assert pointer is not None
    assert not hasattr(pointer, "input")
    assert (pointer.id, pointer.status, pointer.duration_ms) == (
        run.id,
        "completed",
        run.duration_ms,
    )
    assert await WorkflowRun.lookup("missing") is None
    whole = await WorkflowRun.get(run.id)
    assert whole is not None
    assert whole.input == {"big": "x" * 10_000}
    sent: list[bytes] = []
    original = connection_class_of(db).send_packed_command

    async def spy(self: object, command: object, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))  # type: ignore[arg-type]
        await original(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(connection_class_of(db), "send_packed_command", spy)
    await WorkflowRun.list()
    assert b"HMGET" in b"".join(sent)
    assert b"input" not in b"".join(sent)  # the heavy fields are never asked for


async def test_find_works_on_runs(db: fm.Database) -> None:
    await WorkflowRun.start("w")
    assert [r.workflow for r in await WorkflowRun.find(WorkflowRun.status == "active").all()] == [
        "w"
    ]


async def test_every_run_has_its_event_stream(db: fm.Database) -> None:
    run = await WorkflowRun.start("w")
    offset = await run.events.append({"type": "log"})
    assert offset == "0000000000000000_0000000000000000"
    await run.finish()
    with pytest.raises(fm.StreamClosedError, match=f"runs/{run.id}"):
        await run.events.append({"type": "late"})
    assert [e.data async for e in run.events.tail()] == [{"type": "log"}]


async def test_a_page_costs_the_same_at_the_start_and_the_end_of_a_long_listing(
    redis_servers: RedisServers, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private server, so INFO commandstats counts this test's commands (Lua-internal
    # calls included) and nobody else's. One protocol only: the walk is the same in RESP3.
    server = redis_servers.start()
    try:
        async with fm.connect(server.url, key_prefix=key_prefix) as db:
            await _list_twenty_thousand(db, monkeypatch)
    finally:
        server.kill()


async def _list_twenty_thousand(db: fm.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    base = dt.datetime(2026, 1, 1, tzinfo=UTC)
    statuses = ("completed", "errored", "active", "cancelled")
    # Fixed ids, so the spread over the 16 buckets (by id) is the same in every run: with
    # random ids a page now and then needs a third round of the merge (the walks of the
    # buckets meet an uneven stretch), which is correct and would make the bounds below
    # hold or not by chance.
    runs = [
        WorkflowRun(
            id=f"run-{i}",
            workflow=("summarize", "translate")[i % 2],
            status=statuses[i % 4],
            started_at=base + dt.timedelta(seconds=i),
        )
        for i in range(20_000)
    ]
    await WorkflowRun.save_many(runs)  # 5,000 errored runs: 50 pages of 100

    async def commands_on_server() -> int:
        info = await db.client.info("commandstats")
        return sum(int(v["calls"]) for v in info.values())

    await WorkflowRun.list(limit=1)  # a fresh server: the first call loads the query script
    cursor = None
    costs = {}
    for number in range(1, 51):
        before = await commands_on_server()
        with count_round_trips(db, monkeypatch) as trips:
            page = await WorkflowRun.list(status="errored", cursor=cursor)
        costs[number] = (trips[0], await commands_on_server() - before - 1)  # minus INFO
        assert len(page.items) == 100
        cursor = page.next_cursor
    assert cursor is None or not (await WorkflowRun.list(status="errored", cursor=cursor)).items
    # Page 50 costs what page 1 costs: the walk starts at the cursor, not at the top.
    # Runs are in 16 buckets: a page is one round of 16 script calls (sent in two writes
    # by the automatic pipelining: the first call, then the 15 that queued behind it) and
    # one read of the pointers; a round that yields fewer than a page (the merge stops at
    # the earliest bucket's last entry) takes one more round, on a few pages only.
    trips = sorted(cost[0] for cost in costs.values())
    assert trips[40] <= 3  # most pages: one round
    assert trips[-1] <= 6
    # Page 50 costs what page 1 costs: each bucket's walk starts at the cursor, not at the
    # top (a cursor adds two lookups per bucket: ZSCORE and ZREVRANK of its entry).
    first = sorted(costs[n][1] for n in range(1, 11))[5]
    last = sorted(costs[n][1] for n in range(41, 51))[5]
    assert last <= first + 2 * 16
    assert max(cost[1] for cost in costs.values()) < 1000  # O(page), not O(N)


async def ended_the_older_way(db: fm.Database, run: WorkflowRun, status: str = "completed") -> None:
    """End ``run`` as versions before 0008 did first: the row only (they closed the stream
    in a second step, which a crash could cut off)."""
    await run.update(status=status, ended_at=await db.server_time())


async def test_a_run_ends_and_its_stream_closes_in_one_step_no_reader_sees_between(
    db: fm.Database,
) -> None:
    """While runs end, a reader reading each run's row and stream metadata together (one
    MULTI: they are in one slot) never sees an ended run with an open stream."""
    runs = [await WorkflowRun.start("w", run_id=f"r-{n}") for n in range(30)]
    spec = WorkflowRun.__flue_spec__
    pairs = [
        (
            spec.record_key(db.keys, run.id),
            db.keys.stream(WorkflowRun.stream_path(run.id)).meta,
        )
        for run in runs
    ]
    done = asyncio.Event()
    seen: list[tuple[bytes | None, bytes | None]] = []

    async def observe() -> None:
        while not done.is_set():
            for row, meta in pairs:
                status, closed = await db.run_batch(
                    [("HGET", row, "status"), ("HGET", meta, "closed")], atomic=True
                )
                seen.append((status, closed))

    async def end_all() -> None:
        try:
            await asyncio.gather(*(run.finish(result=n) for n, run in enumerate(runs)))
        finally:
            done.set()

    await within(asyncio.gather(observe(), end_all()), "the runs to end while observed")
    assert (b"completed", b"1") in seen  # it looked while they ended
    assert (b"active", b"0") in seen
    assert [pair for pair in seen if pair not in ((b"active", b"0"), (b"completed", b"1"))] == []


async def test_a_retried_end_closes_a_stream_an_older_version_left_open(db: fm.Database) -> None:
    run = await WorkflowRun.start("w")
    await ended_the_older_way(db, run)
    meta = await run.events.meta()
    assert meta is not None
    assert not meta.closed  # ended, but its stream is still open
    assert await WorkflowRun.finish_id(run.id, result=1) is EndResult.ALREADY_ENDED
    meta = await run.events.meta()
    assert meta is not None
    assert meta.closed  # the retry closed it: tails of the run end
    assert [e async for e in run.events.tail()] == []


async def test_open_streams_of_ended_runs_are_found_and_repaired(db: fm.Database) -> None:
    finished = await WorkflowRun.start("w")
    await finished.finish()
    active = await WorkflowRun.start("w")
    stuck = await WorkflowRun.start("w")
    await ended_the_older_way(db, stuck, "errored")
    assert await WorkflowRun.open_streams_of_ended_runs() == [stuck.id]
    assert await WorkflowRun.open_streams_of_ended_runs(repair=True) == [stuck.id]
    assert await WorkflowRun.open_streams_of_ended_runs() == []
    assert (await active.events.meta()).closed is False  # type: ignore[union-attr]


async def test_list_and_counts_by_start_time(db: fm.Database) -> None:
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    runs = [
        await WorkflowRun.start(w, started_at=t0 + dt.timedelta(hours=n))
        for n, w in enumerate(["a", "b", "a", "a"])
    ]
    await runs[2].fail(error={})
    since, until = t0 + dt.timedelta(hours=1), t0 + dt.timedelta(hours=3)
    page = await WorkflowRun.list(since=since, until=until)
    assert [p.id for p in page.items] == [runs[2].id, runs[1].id]  # since inclusive, until not
    mine = await WorkflowRun.list(workflow="a", since=since)
    assert [p.id for p in mine.items] == [runs[3].id, runs[2].id]
    assert await WorkflowRun.counts("a", since=since) == {
        "active": 1, "completed": 0, "errored": 1, "cancelled": 0,
    }  # fmt: skip
    assert sum((await WorkflowRun.counts()).values()) == 4
