"""The benchmark harness: ``python -m bench`` (or ``flue-models bench``).

Every operation runs two ways in this process against the same server, flue-models and
raw redis-py doing the same Redis work, and where it can, a third way: redis-om 1.2 in its
own environment (``.bench-om``, made on first use; it saves and gets a ``HashModel``, and
cannot query a plain server), in a worker process whose repetitions alternate with the
other two sides'. Each figure is the median of ``--runs`` repetitions (at least
5) with min and max; each ratio is the baseline's time over flue-models' time, measured in
the same run (above 1: flue-models is faster).

Options: ``--json``, ``--markdown``, ``--runs N``, ``--quick`` (smaller loops, listing up
to 10k runs), ``--full`` (listing up to 1M runs), ``--no-om``, ``--url URL`` (else
``$REDIS_URL``, else the embedded server), ``--from-json FILE`` (show a saved ``--json``
run as a table or ``--markdown``, measuring nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import flue_models as fm
from bench.harness import OmWorker, Row, markdown, table
from bench.workloads import Bench, import_time

ROOT = Path(__file__).parent.parent
OM_ENV = ROOT / ".bench-om"
OM_REQUIREMENT = "redis-om>=1.2,<1.3"


def om_python() -> Path | None:
    """redis-om's interpreter, installing it in its own environment when it is missing."""
    python = OM_ENV / "bin" / "python"
    if not python.exists():
        print(f"setting up {OM_ENV.name} for redis-om (once)", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(OM_ENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", OM_REQUIREMENT], check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"warning: redis-om is not measured: {exc}", file=sys.stderr)
            return None
    return python


async def measure(options: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    runs = max(5, options.runs)
    scale = 0.3 if options.quick else 1.0
    ops = lambda n: max(5, int(n * scale))  # noqa: E731
    sizes = [1_000, 10_000] if options.quick else [1_000, 10_000, 100_000]
    if options.full:
        sizes.append(1_000_000)
    rows: list[Row] = []
    python = None if options.no_om else om_python()
    async with Bench(options.url, runs) as bench:
        if python is not None:  # alternating with the other sides (bench.harness.OmWorker)
            script = str(ROOT / "bench" / "om_worker.py")
            bench.om = await OmWorker.start(str(python), script, bench.url or "", ops(300))
        server = bench.db.report
        context = {
            "server": f"{server.flavor} {server.version}" if server else "unknown",
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "runs": runs,
        }
        print("measuring model operations", file=sys.stderr)
        rows.append(await bench.single_save(ops(300)))  # (redis-om's too: ops(300))
        rows.append(await bench.update_one_field(ops(300)))
        rows.append(await bench.bulk_save())
        await bench.seed_items(2000)
        rows.append(await bench.get(ops(300)))
        rows.append(await bench.get_many(ops(30)))
        rows.append(await bench.page(ops(100)))
        rows.append(await bench.count(ops(300)))
        rows.append(await bench.memory(2000))
        print("measuring concurrency", file=sys.stderr)
        rows += await bench.concurrent([1, 10, 100], 100 if not options.quick else 20)
        print("measuring streams and sessions", file=sys.stderr)
        rows += await bench.streams(ops(300))
        rows += await bench.sessions(ops(300))
        rows.append(await bench.submissions(ops(100)))
        rows.append(await bench.tail_latency(ops(200)))
        rows.append(await bench.connect_time(ops(10)))
        print(
            f"measuring run listings at {', '.join(f'{s:,}' for s in sizes)} runs", file=sys.stderr
        )
        rows += await bench.run_listing(sizes, ops(50))
    rows += import_time(runs)
    return rows, context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--runs", type=int, default=5, help="repetitions per figure (>= 5)")
    parser.add_argument("--quick", action="store_true", help="smaller loops and listings")
    parser.add_argument("--full", action="store_true", help="list 1M runs too")
    parser.add_argument("--no-om", action="store_true", help="leave redis-om out")
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--from-json", metavar="FILE", help="show a saved --json run instead")
    options = parser.parse_args(argv)
    if options.from_json:
        saved = json.loads(Path(options.from_json).read_text())
        rows, context = [Row.from_json(row) for row in saved["rows"]], saved["context"]
    else:
        try:
            rows, context = asyncio.run(measure(options))
        except fm.FlueModelsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if options.json:
        print(json.dumps({"context": context, "rows": [r.as_json() for r in rows]}, indent=2))
    elif options.markdown:
        print(", ".join(f"{k}: {v}" for k, v in context.items()) + "\n")
        print(markdown(rows))
    else:
        print(", ".join(f"{k}: {v}" for k, v in context.items()))
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
