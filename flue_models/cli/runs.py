"""``flue-models runs list|show|cancel``."""

from __future__ import annotations

import argparse
import json

from flue_models.cli.output import OK, NotFound, emit, print_page
from flue_models.startup import connect
from flue_models.state.run import EndResult, WorkflowRun


async def runs_list(args: argparse.Namespace) -> int:
    """List runs newest first, as a table or JSON.

    Example:
        ```console
        $ flue-models runs list --status errored
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        page = await WorkflowRun.list(
            status=args.status, workflow=args.workflow, limit=args.limit, cursor=args.cursor, db=db
        )
    rows = [
        [
            item.id,
            item.workflow,
            item.status,
            item.started_at.isoformat(timespec="seconds"),
            "" if item.duration_ms is None else f"{item.duration_ms} ms",
        ]
        for item in page.items
    ]
    return print_page(args, page.items, page.next_cursor, rows, "runs")


async def runs_show(args: argparse.Namespace) -> int:
    """Print one run, everything, as JSON.

    Example:
        ```console
        $ flue-models runs show r-1
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        run = await WorkflowRun.get(args.run_id, db=db)
    if run is None:
        raise NotFound(f"no run {args.run_id!r}")
    shown = run.model_dump(mode="json")
    print(json.dumps(shown, ensure_ascii=False) if args.json else json.dumps(shown, indent=2))
    return OK


async def runs_cancel(args: argparse.Namespace) -> int:
    """Cancel an active run.

    Example:
        ```console
        $ flue-models runs cancel r-1
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        outcome = await WorkflowRun.cancel_id(args.run_id, db=db)
    if outcome is EndResult.NOT_FOUND:
        raise NotFound(f"no run {args.run_id!r}")
    if args.json:
        emit({"run_id": args.run_id, "outcome": outcome.value})
    else:
        done = "cancelled" if outcome is EndResult.ENDED else "had already ended; nothing changed"
        print(f"run {args.run_id}: {done}")
    return OK
