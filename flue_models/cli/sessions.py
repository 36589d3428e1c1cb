"""``flue-models sessions list|show``."""

from __future__ import annotations

import argparse
import json

from flue_models.cli.output import OK, NotFound, print_page
from flue_models.startup import connect
from flue_models.state.session import Session


async def sessions_list(args: argparse.Namespace) -> int:
    """List sessions, most recently updated first.

    Example:
        ```console
        $ flue-models sessions list --agent support
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        page = await Session.list(
            agent=args.agent, instance=args.instance, harness=args.harness,
            fork_of=args.fork_of, limit=args.limit, cursor=args.cursor, db=db,
        )  # fmt: skip
    rows = [
        [
            item.id,
            item.updated_at.isoformat(timespec="seconds"),
            f"{item.entry_count} entries",
            f"fork of {item.fork_of}" if item.fork_of else "",
        ]
        for item in page.items
    ]
    return print_page(args, page.items, page.next_cursor, rows, "sessions")


async def sessions_show(args: argparse.Namespace) -> int:
    """Print a session's record and its last entries as JSON.

    Example:
        ```console
        $ flue-models sessions show s-1 --entries 5
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        session = await Session.get(args.session_id, db=db)
        page = await Session.history(args.session_id, limit=args.entries, db=db)
    if session is None or page is None:
        raise NotFound(f"no session {args.session_id!r}")
    shown = session.model_dump(mode="json")
    entries = page.entries[-args.entries :] if args.entries > 0 else []
    shown["entries"] = [entry.model_dump(mode="json") for entry in entries]
    print(json.dumps(shown, ensure_ascii=False) if args.json else json.dumps(shown, indent=2))
    return OK
