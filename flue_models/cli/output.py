"""How commands answer: exit statuses, "not found", and JSON or table output."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

from flue_models.terminal import table

#: Exit statuses (documented in docs/cli.md).
OK, FAILED, USAGE, NOT_FOUND, INTERRUPTED, PIPE_CLOSED = 0, 1, 2, 3, 130, 141


class NotFound(Exception):
    """What a command asked for does not exist (exit status 3).

    Example:
        ```python
        raise NotFound(f"no run {run_id!r}")
        ```
    """


class UsageError(Exception):
    """An argument that parsed but cannot work (exit status 2), found once the command ran.

    Example:
        ```python
        raise UsageError("no collection 'tikcet' in this store")
        ```
    """


def emit(data: Any) -> None:
    """Print ``data`` as one JSON document (``--json``).

    Example:
        >>> emit({"b": 1, "a": "é"})
        {"a": "é", "b": 1}
    """
    print(json.dumps(data, ensure_ascii=False, sort_keys=True))


def print_page(
    args: Namespace, items: Sequence[Any], cursor: str | None, rows: list[list[str]], what: str
) -> int:
    """Print a listing page: JSON (``items`` and ``next_cursor``) or a table and its cursor;
    an empty table says so on standard error (``no runs``).

    Example:
        ```python
        return print_page(args, page.items, page.next_cursor, rows, "runs")
        ```
    """
    if args.json:
        emit({"items": [item.model_dump(mode="json") for item in items], "next_cursor": cursor})
        return OK
    if not rows:
        print(f"no {what}" + (" after this cursor" if args.cursor else ""), file=sys.stderr)
    for line in table(rows):
        print(line.rstrip())
    if cursor:
        print(f"next: --cursor {cursor}")
    return OK
