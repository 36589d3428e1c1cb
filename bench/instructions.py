"""Instructions per operation, counted by callgrind: the judge of small steps.

Wall-clock figures on a shared 2-core VM move by 10-20% from run to run, more than one
step of hot-path work moves them. Callgrind counts the instructions a process executes,
which repeat within a few per cent, so a step's effect shows:

- **client**: the Python process running ``N`` operations, less the same process running
  ``n`` (the imports, ``connect()`` and the warm-up cancel out), over ``N - n``;
- **server** (``--server``): a ``redis-server`` started under callgrind on a free port,
  its counters zeroed after a warm-up run, then ``N`` operations, less a run of none.

Both include what a worker does per operation besides it: the bench's clean-up at the
end deletes every key it wrote (a ``SCAN`` page and a ``DEL`` per key), so a figure is a
little above the operation's own cost, alike for both sides.

Run ``python -m bench.instructions [--ops save,update,...] [--server] [--url URL]``
(``valgrind`` and, for ``--server``, ``redis-server`` on PATH; ``apt-get install
valgrind``). Operations: ``save``, ``update``, ``get``, ``session`` (an append),
``trio`` (admission + claim + finish), ``hget`` (one command through the client), and
raw redis-py's ``raw_save``, ``raw_get``, ``raw_hget``, ``raw_session`` (the session
append row's raw script); ``bulk`` and ``raw_bulk`` save :data:`BULK` new records per
operation (``save_many``; raw: one pipeline of scripts).
The worker itself runs without valgrind: ``python -m bench.instructions --worker OP N
--url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import flue_models as fm
from bench.workloads import UPDATED, Bench, BenchItem, item

OPERATIONS = (
    *("save", "bulk", "update", "get", "session", "trio", "hget"),
    *("raw_save", "raw_bulk", "raw_get", "raw_hget", "raw_session"),
)
#: Records of one ``bulk`` operation (one ``save_many``; raw: one pipeline of scripts).
BULK = 100
#: Operations of the warm-up every worker runs first (scripts loaded, caches filled).
WARM = 20


async def work(operation: str, count: int, url: str) -> tuple[str, str]:
    """Run ``count`` operations (after the warm-up) against ``url``; return the key
    prefixes the two sides wrote under (deleted at the end).

    Example:
        ```python
        await work("save", 100, "redis://127.0.0.1:6379/0")
        ```
    """
    async with Bench(url, 5) as bench:
        numbers = itertools.count(80_000_000 + count * 1_000)
        record = await item(UPDATED).save(db=bench.db)
        await bench.seed_items(60)
        session = await fm.Session.open(f"bench/instructions-{time.time_ns()}", db=bench.db)

        async def save(n: int) -> None:
            await item(n).save(db=bench.db)

        async def bulk(n: int) -> None:
            await BenchItem.save_many([item(n * BULK + i) for i in range(BULK)], db=bench.db)

        async def raw_bulk(n: int) -> None:
            await bench.raw_save_many(range(n * BULK, (n + 1) * BULK))

        async def update(n: int) -> None:
            record.title = f"title {n}"
            await record.save(db=bench.db)

        async def get(n: int) -> None:
            await BenchItem.get(f"i-{n % 60}", db=bench.db)

        async def append(n: int) -> None:
            await session.append(fm.MessageEntry(id=f"m{n}", role="user", content="hello"))

        async def trio(n: int) -> None:
            await fm.Submission.admit_dispatch(f"d-{n}", session_id=f"s-{n}", input={}, db=bench.db)
            attempt = await fm.Submission.claim(f"d-{n}", "w", session_id=f"s-{n}", db=bench.db)
            assert attempt is not None
            assert await fm.Submission.finish(attempt, db=bench.db)

        async def hget(_n: int) -> None:
            await bench.db.client.execute_command("HGET", bench.rk("none"), "f")

        async def raw_get(n: int) -> None:
            await bench.raw.hgetall(bench.rk(f"item:i-{n % 60}"))

        async def raw_hget(_n: int) -> None:
            await bench.raw.hget(bench.rk("none"), "f")

        async def raw_session(n: int) -> None:  # the raw side of the session append row
            await bench.raw_session_append("bench/instructions", n, "hello")

        steps: dict[str, Callable[[int], Awaitable[None]]] = {
            "save": save,
            "bulk": bulk,
            "raw_bulk": raw_bulk,
            "update": update,
            "get": get,
            "session": append,
            "trio": trio,
            "hget": hget,
            "raw_save": bench.raw_save,
            "raw_get": raw_get,
            "raw_hget": raw_hget,
            "raw_session": raw_session,
        }
        step = steps[operation]
        for _ in range(WARM + count):
            await step(next(numbers))
    return bench.prefix, bench.raw_prefix


def callgrind(command: list[str], out: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` under callgrind, its counts written to ``out`` (``%p`` allowed)."""
    tool = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    return subprocess.Popen([*tool, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def total(path: Path) -> int:
    """The instructions a callgrind output counted (its ``summary:`` line)."""
    found = re.search(r"^summary: (\d+)", path.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no summary line in {path}")
    return int(found.group(1))


def worker(operation: str, count: int, url: str) -> list[str]:
    """The command line of one worker run."""
    module = ["-m", "bench.instructions", "--worker", operation, str(count), "--url", url]
    return [sys.executable, *module]


def client_side(operation: str, url: str, few: int, many: int) -> float:
    """Client instructions per operation: ``(Ir(many) - Ir(few)) / (many - few)``."""
    with tempfile.TemporaryDirectory() as folder:
        counted = []
        for count in (few, many):
            out = Path(folder) / f"client-{count}"
            process = callgrind(worker(operation, count, url), out)
            _, errors = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"{operation} x {count}: {errors.decode()[-400:]}")
            counted.append(total(out))
    return (counted[1] - counted[0]) / (many - few)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_side(operation: str, count: int) -> float:
    """Server instructions per operation, on a ``redis-server`` under callgrind."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "server.%p"
        server = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
        server += ["--dir", folder]
        process = callgrind(server, out)
        try:
            deadline = time.monotonic() + 60
            while (
                subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout
                != b"PONG\n"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the server under callgrind did not answer in 60 s")
                time.sleep(0.2)
            counted = []
            subprocess.run(worker(operation, 0, url), check=True, capture_output=True)  # warm
            for runs in (count, 0):
                subprocess.run(
                    ["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True
                )
                subprocess.run(worker(operation, runs, url), check=True, capture_output=True)
                subprocess.run(
                    ["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True
                )
                dumps = sorted(Path(folder).glob("server.*.*"), key=os.path.getmtime)
                counted.append(total(dumps[-1]))
        finally:
            subprocess.run(
                ["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True
            )
            process.wait(timeout=60)
    return (counted[0] - counted[1]) / count


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--ops", default="save,update,get,session,trio,raw_save,raw_get")
    parser.add_argument("--server", action="store_true", help="also count the server's")
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--worker", nargs=2, metavar=("OP", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        operation, count = options.worker
        asyncio.run(work(operation, int(count), options.url))
        return
    operations = options.ops.split(",")
    unknown = sorted(set(operations) - set(OPERATIONS))
    missing = [t for t in ("valgrind", "callgrind_control") if shutil.which(t) is None]
    if options.server:
        missing += [t for t in ("redis-server", "redis-cli") if shutil.which(t) is None]
    if unknown or missing or not options.url:
        problem = (
            f"unknown operations {unknown} (known: {', '.join(OPERATIONS)})"
            if unknown
            else f"not on PATH: {', '.join(missing)}"
            if missing
            else "give --url or set REDIS_URL (a server to count the client against)"
        )
        sys.exit(f"bench.instructions: {problem}")
    print(f"{'operation':10} {'client':>12}" + (f" {'server':>12}" if options.server else ""))
    for operation in operations:
        line = f"{operation:10} {client_side(operation, options.url, 100, 400):12,.0f}"
        if options.server:
            line += f" {server_side(operation, 300):12,.0f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
