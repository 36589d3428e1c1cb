"""Query cost bound: the server's worst PING latency while a 10,000-value ``.in_`` runs.

One script call of a query does bounded work (at most 10,000 Redis calls, then the
query continues in the next call), so a huge ``.in_`` never blocks the server for long.
This measures it: records with an indexed ``code`` (1,000 by default); a query for
10,000 codes (every record's among them; every match read) runs while another process
PINGs the server in a loop (a process of its own, so only the server can delay it), and
its worst PING is compared with the worst PING of the same loop while the client runs raw
redis-py doing the same reads (one ``HGETALL`` per record, pipelined in pages of 100).

Run it with ``python -m bench.in_latency [--json] [--records N] [--values K]`` (on
``$REDIS_URL``, else the embedded server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import flue_models as fm
from flue_models import Indexed, Model


class Coded(Model):
    """A record with one indexed field the query asks for."""

    class Meta:
        collection = "bench_coded"

    id: str = fm.new_id()
    code: Annotated[str, Indexed()]


#: The pinging process: PINGs on its own connection until its standard input closes,
#: then prints the worst and the count (at least one PING: a tiny workload may end before
#: the first). A process of its own, so the client's own work
#: (encoding 10,000 keys per call) never delays its PINGs: only the server can.
PINGER = """
import sys, threading, time, redis
client = redis.Redis.from_url(sys.argv[1])
worst, count, done = 0.0, 0, threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("ready", flush=True)
while True:  # at least one PING, even when the work ends before the first one
    start = time.perf_counter()
    client.ping()
    worst = max(worst, (time.perf_counter() - start) * 1000)
    count += 1
    if done.is_set():
        break
print(worst, count, flush=True)
"""


async def worst_ping(db: fm.Database, work: Callable[[], Awaitable[Any]]) -> tuple[float, int]:
    """Worst PING milliseconds (and how many were sent) from another process while
    ``work`` runs."""
    pinger = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PINGER, db.url.url,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert pinger.stdin is not None
    assert pinger.stdout is not None
    try:
        await asyncio.wait_for(pinger.stdout.readline(), 30)  # "ready"
        await work()
        pinger.stdin.close()
        worst, count = (await asyncio.wait_for(pinger.stdout.readline(), 30)).split()
        return float(worst), int(count)
    finally:
        if pinger.returncode is None:
            pinger.kill()
        await pinger.wait()


async def measure(url: str | None, records: int, values: int) -> dict[str, Any]:
    """Fill a fresh prefix, measure both loops, delete what it wrote."""
    async with fm.connect(url, key_prefix=f"bench-in-{time.time_ns()}") as db:
        try:
            stored = [Coded(id=f"r{n}", code=f"c{n}") for n in range(records)]
            for start in range(0, records, 1000):
                await Coded.save_many(stored[start : start + 1000])
            wanted = [f"c{n}" for n in range(values)]
            rows = [db.keys.record("bench_coded", f"r{n}") for n in range(min(records, values))]
            found: list[int] = []

            query_ms: list[float] = []

            async def ours() -> None:
                start = time.perf_counter()
                found.append(len(await Coded.find(Coded.code.in_(wanted)).all()))
                query_ms.append((time.perf_counter() - start) * 1000)

            async def raw() -> None:
                for start in range(0, len(rows), 100):
                    pipe = db.client.pipeline(transaction=False)
                    for key in rows[start : start + 100]:
                        pipe.hgetall(key)
                    await pipe.execute()

            base_worst, base_pings = await worst_ping(db, raw)
            our_worst, our_pings = await worst_ping(db, ours)
        finally:
            keys = [key async for key in db.client.scan_iter(match=db.keys.pattern())]
            for start in range(0, len(keys), 1000):
                await db.client.delete(*keys[start : start + 1000])
    return {
        "records": records,
        "in_values": values,
        "query_ms": round(query_ms[0], 1),
        "matched": found[0],
        "worst_ping_ms": round(our_worst, 2),
        "pings": our_pings,
        "raw_worst_ping_ms": round(base_worst, 2),
        "raw_pings": base_pings,
        "ratio": round(our_worst / base_worst, 2) if base_worst else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--records", type=int, default=1_000, help="records stored")
    parser.add_argument("--values", type=int, default=10_000, help="values of the in_")
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL, else embedded)")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.url, args.records, args.values))
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['in_values']:,}-value in_ over {figures['records']:,} records "
        f"({figures['matched']:,} matched, {figures['query_ms']:,} ms): worst PING "
        f"{figures['worst_ping_ms']} ms "
        f"over {figures['pings']:,} pings; raw redis-py reading the same rows: worst PING "
        f"{figures['raw_worst_ping_ms']} ms ({figures['ratio']}x)"
    )


if __name__ == "__main__":
    main()
