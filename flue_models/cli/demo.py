"""``flue-models demo``: the README's main job."""

from __future__ import annotations

import argparse

from flue_models.cli.output import OK
from flue_models.demo import run_demo
from flue_models.startup import connect
from flue_models.terminal import Progress


async def demo(args: argparse.Namespace) -> int:
    """Run the simulated agent workload of the README.

    Example:
        ```console
        $ flue-models demo
        ```
    """
    progress = Progress()
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        try:
            await run_demo(db, progress=progress)
        finally:
            progress.done()
    return OK
