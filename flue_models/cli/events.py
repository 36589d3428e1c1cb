"""``flue-models events read|tail``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flue_models.cli.output import OK, NotFound, emit
from flue_models.startup import connect
from flue_models.state.events import TAIL_OUTAGE_SECONDS, EventStream, event_json


async def _existing_stream(args: argparse.Namespace, db: Any) -> EventStream[dict[str, Any]]:
    stream: EventStream[dict[str, Any]] = EventStream(args.path, db=db)
    if await stream.meta() is None:
        raise NotFound(f"no stream {args.path!r}")
    return stream


async def events_read(args: argparse.Namespace) -> int:
    """Print the events of a stream after an offset, one JSON line each.

    Example:
        ```console
        $ flue-models events read runs/r-1 --after 3
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        stream = await _existing_stream(args, db)
        result = await stream.read(after=args.after, limit=args.limit)
    if args.json:
        emit(
            {
                "events": [json.loads(event_json(e)) for e in result.events],
                "next_offset": result.next_offset,
                "up_to_date": result.up_to_date,
                "closed": result.closed,
            }
        )
        return OK
    for event in result.events:
        print(event_json(event))
    print(
        f"next_offset={result.next_offset} up_to_date={str(result.up_to_date).lower()} "
        f"closed={str(result.closed).lower()}",
        file=sys.stderr,
    )
    return OK


async def events_tail(args: argparse.Namespace) -> int:
    """Follow a stream until it closes, one JSON line per event.

    Example:
        ```console
        $ flue-models events tail runs/r-1
        ```
    """
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        stream = await _existing_stream(args, db)
        outage = TAIL_OUTAGE_SECONDS if args.outage is None else args.outage
        async for event in stream.tail(after=args.after, outage=outage):
            print(event_json(event), flush=True)
    return OK
