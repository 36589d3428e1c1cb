"""The ``flue-models`` command line.

Every command connects the way :func:`flue_models.connect` does: ``--url``, then
``$REDIS_URL``, then the embedded server. Errors are printed as one message (never a
traceback) and give a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from flue_models.config import data_dir_from_environment
from flue_models.connection import connect
from flue_models.embedded import EmbeddedServer
from flue_models.errors import FlueModelsError
from flue_models.inspection import check_report, read_server

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL, else the embedded server)")
    parser.add_argument("--prefix", default="flue", help="key prefix (default: flue)")
    parser.add_argument(
        "--no-inspect",
        action="store_true",
        help="skip the server checks (for managed services that deny CONFIG and INFO)",
    )


async def _check(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        where = db.url.display
        if db.embedded is not None:
            where += f" (embedded, data in {db.embedded.data_dir})"
        print(f"url: {where}")
        print(f"prefix: {db.keys.prefix}")
        report = await read_server(db.client)
        for line in report.lines():
            print(line)
        if args.no_inspect:
            print("checks: skipped (--no-inspect)")
            return 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_report(report)
        for warning in caught:
            print(f"warning: {warning.message}")
        print("checks: passed (standalone server, noeviction)")
        return 0


def _server_for(args: argparse.Namespace) -> EmbeddedServer:
    return EmbeddedServer(Path(args.data_dir) if args.data_dir else data_dir_from_environment())


async def _server_status(args: argparse.Namespace) -> int:
    server = _server_for(args)
    record = server.running()
    if record is None:
        print(f"embedded server: not running (data in {server.data_dir})")
        return 3
    print(f"embedded server: running, pid {record.pid}, {record.url}")
    print(f"data: {server.data_dir}")
    print(f"binary: {record.binary}")
    return 0


async def _server_stop(args: argparse.Namespace) -> int:
    server = _server_for(args)
    async with server.locked():
        stopped = await asyncio.to_thread(server.stop)
    print("embedded server: stopped" if stopped else "embedded server: was not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every ``flue-models`` command.

    Example:
        >>> "check" in build_parser().format_help()
        True
    """
    parser = argparse.ArgumentParser(
        prog="flue-models",
        description="Durable agent and workflow state in Redis: check the server, manage "
        "the embedded server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", help="print the server's version, persistence, eviction policy and cluster state"
    )
    _connection_options(check)
    check.set_defaults(handler=_check)

    server = commands.add_parser("server", help="manage the embedded server (status, stop)")
    server_commands = server.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("status", _server_status, "show whether the embedded server runs, and where"),
        ("stop", _server_stop, "stop the embedded server (its data stays on disk)"),
    ):
        action = server_commands.add_parser(name, help=text)
        action.add_argument(
            "--data-dir", help="data directory (default: $FLUE_DATA_DIR or ./.flue/redis)"
        )
        action.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flue-models`` command line and return its exit status.

    Example:
        ```console
        $ flue-models check
        url: redis://127.0.0.1:41235/0 (embedded, data in /home/me/app/.flue/redis)
        ...
        ```
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args))
    except FlueModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `flue-models check | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
