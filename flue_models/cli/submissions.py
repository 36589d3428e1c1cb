"""``flue-models submissions list|requeue``."""

from __future__ import annotations

import argparse

from flue_models.cli.output import OK, NotFound, emit, print_page
from flue_models.errors import FlueModelsError
from flue_models.startup import connect
from flue_models.state.submission import Submission


async def submissions_list(args: argparse.Namespace) -> int:
    """List accepted submissions in admission order.

    Example:
        ```console
        $ flue-models submissions list --status queued
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        query = Submission.find().using(db)
        if args.status:
            query = query.where(Submission.status == args.status)
        page = await query.page(limit=args.limit, cursor=args.cursor)
    rows = [
        [
            str(row.sequence),
            row.id,
            row.kind,
            row.status,
            f"session={row.session_id} attempts={row.attempt_count}"
            + (f" owner={row.owner_id}" if row.owner_id else "")
            + (f" outcome={row.outcome}" if row.outcome else ""),
        ]
        for row in page.items
    ]
    return print_page(args, page.items, page.next_cursor, rows, "submissions")


async def submissions_requeue(args: argparse.Namespace) -> int:
    """Give a submission whose lease expired back to the queue.

    Example:
        ```console
        $ flue-models submissions requeue sub-1
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        requeued = await Submission.requeue_expired(args.submission_id, db=db)
        row = None if requeued else await Submission.get(args.submission_id, db=db)
    if not requeued and row is None:
        raise NotFound(f"no submission {args.submission_id!r}")
    if args.json:
        emit({"submission_id": args.submission_id, "requeued": requeued})
    elif requeued:
        print(f"submission {args.submission_id}: requeued")
    if not requeued:
        raise FlueModelsError(
            f"submission {args.submission_id!r} was not requeued: it is not running with an "
            "expired lease, or its input was applied (recover it with replace_attempt)"
        )
    return OK
