"""``flue-models bench``: the benchmarks of a source checkout."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import flue_models
from flue_models.cli.output import NotFound


def bench_folder() -> Path | None:
    """The checkout's ``bench/`` folder (beside an editable install, or under the current
    directory), or ``None``: the benchmarks are not part of the installed package.

    Example:
        ```python
        root = bench_folder()   # Path('/home/me/flue-models') in a checkout
        ```
    """
    for root in (Path(flue_models.__file__).resolve().parent.parent, Path.cwd()):
        if (root / "bench" / "__main__.py").is_file():
            return root
    return None


async def bench(args: argparse.Namespace) -> int:
    """Run the benchmarks of the source checkout (``python -m bench``) with the given options.

    Example:
        ```console
        $ flue-models bench --quick
        ```
    """
    root = bench_folder()
    if root is None:
        raise NotFound(
            "no bench/ folder: the benchmarks live in the source checkout; run "
            "'flue-models bench' from it (or 'python -m bench' there)"
        )
    command = [sys.executable, "-m", "bench", *args.bench_args]
    process = await asyncio.create_subprocess_exec(*command, cwd=root)
    return await process.wait()
