"""The operations measured, each two ways in one process on one server: flue-models, and
raw redis-py doing the same Redis work by hand (the same keys, fields and index entries,
written by a hand-written script of the same shape; the same reads).

The raw side keeps its keys under its own prefix and uses redis-py's own asyncio client
(its default connection pool, hiredis when installed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis

import flue_models as fm
from bench.harness import OmWorker, Row, Stats, Step, repeat, repeat_beside, repeat_once
from flue_models.model.fields import Indexed

HERE = Path(__file__).parent
#: The record the update benchmark rewrites (apart from the seeded ones).
UPDATED = 5_000_000
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class BenchItem(fm.Model):
    """The record of the model benchmarks: an indexed status, newest first by time."""

    class Meta:
        collection = "bench_item"
        order_by = "created_at"

    id: str
    title: str
    status: Annotated[Literal["open", "closed"], Indexed()]
    priority: int
    created_at: dt.datetime


#: The raw side's save: the version check, the counter, the hash and both index entries.
RAW_SAVE = """
local stored = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if stored ~= tonumber(ARGV[2]) then return {'conflict', stored} end
local version = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'version', version, unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {'ok', version}
"""

#: The raw side's stream append: refuse a closed stream, number and add each event with
#: the append's server time in milliseconds (as the library's entries carry it).
RAW_APPEND = """
if redis.call('HGET', KEYS[1], 'closed') == '1' then return {'closed'} end
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local reply = {'ok'}
for i = 1, #ARGV do
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('XADD', KEYS[2], '0-' .. seq, 'd', ARGV[i], 't', ms)
  table.insert(reply, seq)
end
return reply
"""

#: The raw side's session append: the library's writes without its checks: push the
#: entry, keep its position under its id, count it, move the leaf and the update time,
#: and rescore the session in the set that lists sessions by update time.
RAW_SESSION_APPEND = """
local length = redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSETNX', KEYS[3], ARGV[1], length - 1)
local now = redis.call('TIME')
redis.call('HINCRBY', KEYS[1], 'entry_count', 1)
redis.call('HSET', KEYS[1], 'leaf_id', ARGV[1], 'updated_at', now[1] .. '.' .. now[2])
redis.call('ZADD', KEYS[4], now[1] * 1000 + math.floor(now[2] / 1000), ARGV[3])
return 1
"""


#: The raw side of a submission's life, one script per step (the writes the library's
#: admission, claim and finish make, without their checks): KEYS[1] the row, KEYS[2] the
#: session's sequence counter, KEYS[3..] the index sets; ARGV[1] the step, ARGV[2] the id.
RAW_SUBMISSION = """
local id = ARGV[2]
if ARGV[1] == 'admit' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'id', id, 'session_id', ARGV[3], 'kind', 'dispatch',
    'input', ARGV[4], 'status', 'queued', 'sequence', seq, 'accepted_at', ARGV[5],
    'attempt_count', 0, 'max_attempts', 10, 'open_session', ARGV[3], 'version', 1)
  for i = 3, 6 do redis.call('ZADD', KEYS[i], seq, id) end
  return seq
elseif ARGV[1] == 'claim' then
  local seq = redis.call('HGET', KEYS[1], 'sequence')
  redis.call('HSET', KEYS[1], 'status', 'running', 'attempt_id', ARGV[3], 'owner_id', 'w',
    'lease_expires_at', ARGV[4], 'attempt_count', 1)
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], seq, id)
  redis.call('ZADD', KEYS[5], seq, id)
  redis.call('ZADD', KEYS[6], ARGV[5], id)
  return 1
end
local seq = redis.call('HGET', KEYS[1], 'sequence')
redis.call('HDEL', KEYS[1], 'owner_id', 'lease_expires_at', 'open_session')
redis.call('HSET', KEYS[1], 'status', 'settled', 'settled_at', ARGV[3], 'outcome', 'completed')
redis.call('HINCRBY', KEYS[1], 'version', 1)
for i = 3, 6 do redis.call('ZREM', KEYS[i], id) end
redis.call('ZADD', KEYS[7], seq, id)
redis.call('ZADD', KEYS[8], ARGV[4], id)
return 1
"""


def status_of(n: int) -> str:
    """The status of seeded record ``n``: every other one is open."""
    return "open" if n % 2 else "closed"


def item(n: int, status: str = "open") -> BenchItem:
    return BenchItem(
        id=f"i-{n}",
        title=f"item number {n}",
        status=status,
        priority=n % 10,  # type: ignore[arg-type]
        created_at=EPOCH + dt.timedelta(seconds=n),
    )


def raw_fields(n: int, status: str = "open") -> list[Any]:
    created = EPOCH + dt.timedelta(seconds=n)
    return [
        "id",
        f"i-{n}",
        "title",
        f"item number {n}",
        "status",
        status,
        "priority",
        str(n % 10),
        "created_at",
        created.isoformat(),
    ]


class Bench:
    """Both sides of every operation, on one server, under fresh prefixes."""

    def __init__(self, url: str | None, runs: int) -> None:
        self.url = url
        self.runs = runs
        stamp = time.time_ns()
        self.prefix = f"bench-flue-{stamp}"
        self.raw_prefix = f"bench-raw-{stamp}"
        self.db: fm.Database
        self.raw: aioredis.Redis
        self.versions: dict[str, int] = {}
        self.salts = itertools.count()
        #: redis-om's side of the save and get rows, when it is measured.
        self.om: OmWorker | None = None

    async def __aenter__(self) -> Bench:
        self.db = await fm.connect(self.url, key_prefix=self.prefix)
        self.url = self.db.url.url  # the embedded server's, when none was given
        self.raw = aioredis.Redis.from_url(self.url)
        self.save_script = self.raw.register_script(RAW_SAVE)
        self.append_script = self.raw.register_script(RAW_APPEND)
        self.session_script = self.raw.register_script(RAW_SESSION_APPEND)
        self.submission_script = self.raw.register_script(RAW_SUBMISSION)
        await self.raw.script_load(RAW_SAVE)  # pipelined EVALSHA does not load it
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.om is not None:
            await self.om.close()
        for prefix in (self.prefix, self.raw_prefix):
            batch: list[bytes] = []
            async for key in self.raw.scan_iter(match=f"{prefix}::*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await self.raw.delete(*batch)
                    batch = []
            if batch:
                await self.raw.delete(*batch)
        await self.raw.aclose()
        await self.db.close()

    # Raw keys ----------------------------------------------------------------------------

    def rk(self, rest: str) -> str:
        return f"{self.raw_prefix}::{rest}"

    def raw_save_keys(self, n: int, status: str = "open") -> list[str]:
        return [
            self.rk("item:version"),
            self.rk(f"item:i-{n}"),
            self.rk("item:all"),
            self.rk(f"item:idx:status:{status}"),
        ]

    async def raw_save(self, n: int, status: str = "open", client: Any = None) -> None:
        expected = self.versions.get(f"i-{n}", 0)
        score = dt.timedelta(seconds=n) + (EPOCH - dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
        args = [f"i-{n}", expected, score.total_seconds() * 1000, *raw_fields(n, status)]
        reply = await self.save_script(keys=self.raw_save_keys(n, status), args=args, client=client)
        self.versions[f"i-{n}"] = int(reply[1])

    async def raw_save_many(
        self, numbers: range, status: Callable[[int], str] = lambda _n: "open"
    ) -> None:
        """New records by the raw script, pipelined."""
        async with self.raw.pipeline(transaction=False) as pipe:
            for n in numbers:
                score = (EPOCH.timestamp() + n) * 1000
                keys = self.raw_save_keys(n, status(n))
                fields = raw_fields(n, status(n))
                pipe.evalsha(self.save_script.sha, 4, *keys, f"i-{n}", 0, score, *fields)
            await pipe.execute()

    # Model operations --------------------------------------------------------------------

    async def single_save(self, ops: int = 300) -> Row:
        base = 10_000_000

        async def flue(i: int) -> None:
            await item(base + i).save(db=self.db)

        async def raw(i: int) -> None:
            await self.raw_save(base + i)

        (fl, rw), om = await self._beside_om("save", ops, flue, raw)
        return Row("single save", ops, fl, rw, om)

    async def update_one_field(self, ops: int = 300) -> Row:
        record = await item(UPDATED).save(db=self.db)
        await self.raw_save(UPDATED)

        async def flue(i: int) -> None:
            record.title = f"title {i}"
            await record.save(db=self.db)

        async def raw(i: int) -> None:
            key = self.raw_save_keys(UPDATED)
            expected = self.versions[f"i-{UPDATED}"]
            reply = await self.save_script(
                keys=key, args=[f"i-{UPDATED}", expected, 0, "title", f"title {i}"]
            )
            self.versions[f"i-{UPDATED}"] = int(reply[1])

        fl, rw = await repeat(ops, self.runs, flue, raw)
        return Row("update one field", ops, fl, rw, note="versioned")

    async def bulk_save(self, size: int = 500) -> Row:
        async def flue(run: int) -> int:
            start = 20_000_000 + run * size
            await BenchItem.save_many([item(start + n) for n in range(size)], db=self.db)
            return size

        async def raw(run: int) -> int:
            start = 20_000_000 + run * size
            await self.raw_save_many(range(start, start + size))
            return size

        fl, rw = await repeat_once(self.runs, flue, raw)
        return Row(
            f"bulk save ({size} per call)", size, fl, rw, note=f"{fl.per_second:,.0f} records/s"
        )

    async def seed_items(self, count: int) -> None:
        """``count`` records both ways, every other one open."""
        for start in range(0, count, 500):
            batch = range(start, min(start + 500, count))
            await BenchItem.save_many([item(n, status_of(n)) for n in batch], db=self.db)
            await self.raw_save_many(batch, status_of)
            for n in batch:
                self.versions[f"i-{n}"] = 1

    async def get(self, ops: int = 300, population: int = 2000) -> Row:
        async def flue(i: int) -> None:
            assert await BenchItem.get(f"i-{i % population}", db=self.db) is not None

        async def raw(i: int) -> None:
            assert await self.raw.hgetall(self.rk(f"item:i-{i % population}"))

        (fl, rw), om = await self._beside_om("get", ops, flue, raw)
        return Row("get by id", ops, fl, rw, om)

    async def _beside_om(
        self, kind: str, ops: int, flue: Step, raw: Step
    ) -> tuple[list[Stats], Stats | None]:
        """The two sides, and redis-om's ``kind`` step after them in each run (``ops``
        operations: the worker was started with the same count)."""
        om = self.om
        if om is None:
            return await repeat(ops, self.runs, flue, raw), None
        return await repeat_beside(ops, self.runs, flue, raw, elsewhere=lambda: om.step(kind))

    async def get_many(self, ops: int = 30, size: int = 100, population: int = 2000) -> Row:
        async def flue(i: int) -> None:
            ids = [f"i-{(i * size + n) % population}" for n in range(size)]
            found = await BenchItem.get_many(ids, db=self.db)
            assert all(found)

        async def raw(i: int) -> None:
            async with self.raw.pipeline(transaction=False) as pipe:
                for n in range(size):
                    pipe.hgetall(self.rk(f"item:i-{(i * size + n) % population}"))
                assert all(await pipe.execute())

        fl, rw = await repeat(ops, self.runs, flue, raw)
        return Row(f"get many ({size} ids)", ops, fl, rw)

    async def page(self, ops: int = 100) -> Row:
        query = BenchItem.find(BenchItem.status == "open").sort_by("-created_at").using(self.db)

        async def flue(_i: int) -> None:
            assert len((await query.page(50)).items) == 50

        async def raw(_i: int) -> None:
            ids = await self.raw.zrevrange(self.rk("item:idx:status:open"), 0, 49)
            async with self.raw.pipeline(transaction=False) as pipe:
                for found in ids:
                    pipe.hgetall(self.rk(f"item:{found.decode()}"))
                assert len(await pipe.execute()) == 50

        fl, rw = await repeat(ops, self.runs, flue, raw)
        return Row(
            "page of 50, one filter, newest first",
            ops,
            fl,
            rw,
            note="raw: ZREVRANGE + pipelined HGETALL",
        )

    async def count(self, ops: int = 300) -> Row:
        query = BenchItem.find(BenchItem.status == "open").using(self.db)

        async def flue(_i: int) -> None:
            assert await query.count() > 0

        async def raw(_i: int) -> None:
            assert await self.raw.zcard(self.rk("item:idx:status:open")) > 0

        fl, rw = await repeat(ops, self.runs, flue, raw)
        return Row("count, one filter", ops, fl, rw)

    async def memory(self, population: int) -> Row:
        """Bytes per record: the row plus its share of the index sets, both layouts."""
        spec = BenchItem.__flue_spec__
        keys = self.db.keys
        index_keys = [
            keys.all("bench_item"),
            spec.equality_key(keys, "status", "open"),
            spec.equality_key(keys, "status", "closed"),
        ]
        raw_index = [
            self.rk("item:all"),
            self.rk("item:idx:status:open"),
            self.rk("item:idx:status:closed"),
        ]
        sample = range(0, population, max(1, population // 200))

        async def usage(rows: list[str], indexes: list[str]) -> float:
            row_bytes = [int(await self.raw.memory_usage(k) or 0) for k in rows]
            index_bytes = sum([int(await self.raw.memory_usage(k) or 0) for k in indexes])
            return sum(row_bytes) / len(row_bytes) + index_bytes / population

        flue = await usage([keys.record("bench_item", f"i-{n}") for n in sample], index_keys)
        raw = await usage([self.rk(f"item:i-{n}") for n in sample], raw_index)
        return Row(
            "memory per record (bytes)",
            population,
            Stats(flue, flue, flue),
            Stats(raw, raw, raw),
            note="MEMORY USAGE, row + index share",
            unit="B",
        )

    # Runs --------------------------------------------------------------------------------

    async def run_listing(self, sizes: list[int], ops: int = 50) -> list[Row]:
        rows: list[Row] = []
        seeded = 0
        for size in sizes:
            while seeded < size:  # rows only: the listing reads no stream
                batch = range(seeded, min(seeded + 1000, size))
                runs = [
                    fm.WorkflowRun(
                        id=f"r-{n:08d}",
                        workflow=f"wf-{n % 7}",
                        status="completed",
                        started_at=EPOCH + dt.timedelta(seconds=n),
                        ended_at=EPOCH + dt.timedelta(seconds=n + 1),
                        duration_ms=1000,
                    )
                    for n in batch
                ]
                await fm.WorkflowRun.save_many(runs, db=self.db)
                async with self.raw.pipeline(transaction=False) as pipe:
                    for n in batch:
                        pipe.hset(
                            self.rk(f"run:r-{n:08d}"),
                            mapping={
                                "id": f"r-{n:08d}",
                                "workflow": f"wf-{n % 7}",
                                "status": "completed",
                                "started_at": (EPOCH + dt.timedelta(seconds=n)).isoformat(),
                            },
                        )
                        pipe.zadd(self.rk("run:all"), {f"r-{n:08d}": n})
                    await pipe.execute()
                seeded = batch.stop

            async def flue(_i: int) -> None:
                assert len((await fm.WorkflowRun.list(limit=50, db=self.db)).items) == 50

            async def raw(_i: int) -> None:
                ids = await self.raw.zrevrange(self.rk("run:all"), 0, 49)
                async with self.raw.pipeline(transaction=False) as pipe:
                    for found in ids:
                        pipe.hgetall(self.rk(f"run:{found.decode()}"))
                    assert len(await pipe.execute()) == 50

            fl, rw = await repeat(ops, self.runs, flue, raw)
            rows.append(Row(f"run listing page of 50, {size:,} runs", ops, fl, rw))
        first = rows[0].flue.median_us
        for row in rows:
            row.note = f"{row.flue.median_us / first:.2f}x the {sizes[0]:,}-run page"
        return rows

    # Streams -----------------------------------------------------------------------------

    async def streams(self, ops: int = 300, batch: int = 100) -> list[Row]:
        stream = fm.EventStream("bench", db=self.db)
        await stream.create()
        meta, events = self.rk("stream:bench"), self.rk("stream:bench:events")
        await self.raw.hset(meta, "seq", 0)
        payload = {"type": "log", "message": "a line of output from a step"}

        async def flue_one(_i: int) -> None:
            await stream.append(payload)

        async def raw_one(_i: int) -> None:  # each payload encoded per call, as ours are
            await self.append_script(keys=[meta, events], args=[json.dumps(payload)])

        single = await repeat(ops, self.runs, flue_one, raw_one)

        async def flue_many(_i: int) -> None:
            await stream.append_many([payload] * batch)

        async def raw_many(_i: int) -> None:
            texts = [json.dumps(p) for p in [payload] * batch]
            await self.append_script(keys=[meta, events], args=texts)

        many = await repeat(max(1, ops // 10), self.runs, flue_many, raw_many)

        async def flue_read(_i: int) -> None:
            assert len((await stream.read(limit=100)).events) == 100

        async def raw_read(_i: int) -> None:
            found = await self.raw.xrange(events, "-", "+", count=100)
            assert [json.loads(fields[b"d"]) for _id, fields in found]

        read = await repeat(ops, self.runs, flue_read, raw_read)
        per_event = Stats(*(v / batch for v in (many[0].median_us, many[0].min_us, many[0].max_us)))
        raw_event = Stats(*(v / batch for v in (many[1].median_us, many[1].min_us, many[1].max_us)))
        return [
            Row("event append, one per call", ops, *single),
            Row(
                f"event append, {batch} per call (per event)",
                ops,
                per_event,
                raw_event,
                note=f"{per_event.per_second:,.0f} events/s",
            ),
            Row("event read page of 100", ops, *read, note="raw: XRANGE + JSON decode"),
        ]

    # Sessions ----------------------------------------------------------------------------

    async def raw_session_append(self, session_id: str, n: int, content: str) -> None:
        """The raw side of a session append: entry ``m<n>`` of ``session_id`` by
        :data:`RAW_SESSION_APPEND`, its JSON encoded per call.

        Example:
            ```python
            await bench.raw_session_append("bench/append", 7, "hello there")
            ```
        """
        entry = {"type": "message", "id": f"m{n}", "role": "user", "content": content}
        parts = ("session:", "session/entries:", "session/entry_ids:")
        keys = [*(self.rk(part + session_id) for part in parts), self.rk("session:all")]
        args = [f"m{n}", "E" + json.dumps(entry), session_id]
        await self.session_script(keys=keys, args=args)

    async def sessions(self, ops: int = 300, entries: int = 1000) -> list[Row]:
        session = await fm.Session.open("bench/append", db=self.db)
        row = self.rk("session:bench/append")
        await self.raw.hset(row, mapping={"id": "bench/append", "entry_count": 0})

        async def flue(i: int) -> None:
            await session.append(fm.MessageEntry(id=f"m{i}", role="user", content="hello there"))

        async def raw(i: int) -> None:
            await self.raw_session_append("bench/append", i, "hello there")

        append = await repeat(ops, self.runs, flue, raw)
        loaded = await fm.Session.open("bench/load", db=self.db)
        batch = [
            fm.MessageEntry(id=f"m{n}", role="user", content="hello there " * 4)
            for n in range(entries)
        ]
        await loaded.append_many(batch)
        encoded = ["E" + entry.model_dump_json() for entry in batch]
        load_row, load_items = self.rk("session:bench/load"), self.rk("session/entries:bench/load")
        await self.raw.hset(load_row, mapping={"id": "bench/load", "entry_count": entries})
        await self.raw.rpush(load_items, *encoded)

        async def flue_load(_i: int) -> None:
            found = await fm.Session.load("bench/load", db=self.db)
            assert found is not None
            assert len(found.entries) == entries

        async def raw_load(_i: int) -> None:
            async with self.raw.pipeline(transaction=True) as pipe:
                pipe.hgetall(load_row)
                pipe.lrange(load_items, 0, -1)
                _row, elements = await pipe.execute()
            assert len([json.loads(e[1:]) for e in elements]) == entries

        load = await repeat(max(1, ops // 15), self.runs, flue_load, raw_load)
        return [
            Row("session append", ops, *append),
            Row(
                f"session load, {entries:,} entries",
                max(1, ops // 15),
                *load,
                note="raw: MULTI HGETALL + LRANGE + JSON decode",
            ),
        ]

    async def submissions(self, ops: int = 100) -> Row:
        """A dispatch admitted, claimed and finished, one after the other. The claim names
        the session, as a worker that admitted the dispatch or listed it can (its bucket
        alone is read); the admission's write is guarded by the id's key in the other 15
        buckets and its receipt (an id admitted under another session is a conflict). The
        raw side knows its key."""

        async def flue(i: int) -> None:
            await fm.Submission.admit_dispatch(
                f"d-{i}", session_id=f"s-{i}", input={"n": i}, db=self.db
            )
            attempt = await fm.Submission.claim(f"d-{i}", "w", session_id=f"s-{i}", db=self.db)
            assert attempt is not None
            assert await fm.Submission.finish(attempt, db=self.db)

        async def raw(i: int) -> None:
            row, seq = self.rk(f"sub:d-{i}"), self.rk(f"sub/sequence:s-{i}")
            sets = [self.rk(f"sub:idx:{name}") for name in ("all", "open", "session", "queued")]
            args = ["admit", f"d-{i}", f"s-{i}", json.dumps({"n": i}), EPOCH.isoformat()]
            await self.submission_script(keys=[row, seq, *sets], args=args)
            await self.raw.hgetall(row)  # the claim reads the row and the clock first
            await self.raw.time()
            claimed = [self.rk(f"sub:idx:{n}") for n in ("queued", "running", "owner", "lease")]
            args = ["claim", f"d-{i}", f"a-{i}", EPOCH.isoformat(), 1.0]
            await self.submission_script(keys=[row, seq, *claimed], args=args)
            await self.raw.hgetall(row)  # and so does the finish
            await self.raw.time()
            ended = [self.rk(f"sub:idx:{n}") for n in ("open", "running", "owner", "lease")]
            settled = [self.rk("sub:idx:settled"), self.rk("sub:rng:settled_at")]
            args = ["finish", f"d-{i}", EPOCH.isoformat(), 1.0]
            await self.submission_script(keys=[row, seq, *ended, *settled], args=args)

        fl, rw = await repeat(ops, self.runs, flue, raw)
        return Row("admission + claim + finish", ops, fl, rw, note="one dispatch, each step")

    # Concurrency -------------------------------------------------------------------------

    async def concurrent(self, task_counts: list[int], each: int = 100) -> list[Row]:
        """For each count, that many tasks doing ``each`` saves (then gets) at once:
        flue-models with and without auto-pipelining, raw redis-py with its pool."""
        rows = []
        plain = await fm.connect(self.url, key_prefix=self.prefix, auto_pipeline=False)
        try:
            for tasks in task_counts:
                for name in ("saves", "gets"):
                    rows.append(await self._concurrently(plain, tasks, each, name))
        finally:
            await plain.close()
        return rows

    async def _concurrently(self, plain: fm.Database, tasks: int, each: int, kind: str) -> Row:
        async def flue(_run: int, db: fm.Database = self.db) -> int:
            salt = next(self.salts)  # fresh ids for every repetition of every side
            await asyncio.gather(*(self._flue_task(db, kind, salt, t, each) for t in range(tasks)))
            return tasks * each

        async def flue_plain(run: int) -> int:
            return await flue(run, plain)

        async def raw(_run: int) -> int:
            salt = next(self.salts)
            await asyncio.gather(*(self._raw_task(kind, salt, t, each) for t in range(tasks)))
            return tasks * each

        fl, rw, np = await repeat_once(self.runs, flue, raw, flue_plain)
        return Row(
            f"{tasks} task{'s' if tasks != 1 else ''} x {each} {kind} (per op)",
            tasks * each,
            fl,
            rw,
            note=f"{fl.per_second:,.0f} ops/s; without auto-pipelining "
            f"{rw.median_us / np.median_us:.2f}x raw",
            extra={"without_auto_pipeline_us": np.median_us, "tasks": tasks, "kind": kind},
        )

    async def _flue_task(self, db: fm.Database, kind: str, run: int, task: int, each: int) -> None:
        base = 30_000_000 + (run * 1000 + task) * each
        for n in range(each):
            if kind == "saves":
                await item(base + n).save(db=db)
            else:
                await BenchItem.get(f"i-{(task * each + n) % 2000}", db=db)

    async def _raw_task(self, kind: str, run: int, task: int, each: int) -> None:
        base = 30_000_000 + (run * 1000 + task) * each
        for n in range(each):
            if kind == "saves":
                await self.raw_save(base + n)
            else:
                await self.raw.hgetall(self.rk(f"item:i-{(task * each + n) % 2000}"))

    # Process-level figures -------------------------------------------------------------

    async def tail_latency(self, events: int = 200) -> Row:
        """Wake-up latency of a tail in another process, flue-models against XREAD BLOCK."""
        figures = []
        for mode in ("flue", "raw"):
            path = f"latency-{mode}"
            stream = fm.EventStream(path, db=self.db)
            await stream.create()
            key = self.db.keys.stream(path).events
            env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.tail_worker",
                mode,
                self.url or "",
                self.prefix,
                path,
                key,
                str(events),
                stdout=subprocess.PIPE,
                env=env,
            )
            assert child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"ready"
            delays = []
            for n in range(events):
                sent = time.time_ns()
                await stream.append({"n": n, "sent": sent})
                line = await asyncio.wait_for(child.stdout.readline(), 10)
                delays.append((int(line) - sent) / 1000)
            await asyncio.wait_for(child.wait(), 30)
            delays.sort()
            figures.append(delays)
        flue, raw = figures
        row = Row(
            f"tail wake-up, another process ({events} events)",
            events,
            Stats(quantile(flue, 0.5), flue[0], flue[-1]),
            Stats(quantile(raw, 0.5), raw[0], raw[-1]),
            note=f"p99 {quantile(flue, 0.99) / 1000:.2f} ms "
            f"(raw {quantile(raw, 0.99) / 1000:.2f} ms)",
        )
        row.extra = {"p99_us": quantile(flue, 0.99), "raw_p99_us": quantile(raw, 0.99)}
        return row

    async def connect_time(self, ops: int = 10) -> Row:
        async def flue(_i: int) -> None:
            async with fm.connect(self.url, key_prefix=self.prefix):
                pass

        async def raw(_i: int) -> None:  # the least a client that checks the server sends
            client = aioredis.Redis.from_url(self.url or "")
            await client.ping()
            await client.info()
            await client.aclose()

        fl, rw = await repeat(ops, self.runs, flue, raw)
        note = "checks the server and the schema; raw: PING + INFO (target: within 2x)"
        return Row("connect()", ops, fl, rw, note=note)


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted samples (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def import_time(runs: int) -> list[Row]:
    """Import times in fresh interpreters, timed inside each (the interpreter's own
    start-up is not in them; subtracting a bare interpreter's time instead gave
    negative figures when one start-up took longer than another): ``import
    flue_models`` (names load on first use), and the first use of ``connect``,
    ``Model`` and ``Session``; each against ``import redis.asyncio``."""

    def timed(code: str) -> float:
        timer = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
        done = subprocess.run(
            [sys.executable, "-c", timer], check=True, capture_output=True, text=True
        )
        return float(done.stdout.split()[-1]) * 1e6

    codes = {
        "package": "import flue_models",
        "first use": "import flue_models as fm; fm.connect, fm.Model, fm.Session",
        "raw": "import redis.asyncio",
    }
    samples: dict[str, list[float]] = {name: [] for name in codes}
    for _ in range(runs):
        for name, code in codes.items():
            samples[name].append(timed(code))
    stats = {name: Stats.of(found) for name, found in samples.items()}
    note = "in a fresh interpreter, timed inside it; raw: import redis.asyncio"
    return [
        Row("import flue_models", 1, stats["package"], stats["raw"], note=note),
        Row("import + connect, Model, Session", 1, stats["first use"], stats["raw"], note=note),
    ]
