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
from flue_models.schema import MigrationSet, migrate, new_migration_file, schema_status

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
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False, migrate=False) as db:
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


def _sets(args: argparse.Namespace) -> list[MigrationSet]:
    return [MigrationSet(args.set, args.dir)] if args.dir else []


async def _migrate(args: argparse.Namespace) -> int:
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect, migrate=False
    ) as db:
        steps = await migrate(db, _sets(args), to=args.to, dry_run=args.dry_run, force=args.force)
        if not steps:
            statuses = await schema_status(db, _sets(args))
            print("up to date: " + ", ".join(f"{s.name} at {s.stored}" for s in statuses))
            return 0
        for step in steps:
            verb = "applied" if step.direction == "up" else "reverted"
            if args.dry_run:
                verb = "would apply" if step.direction == "up" else "would revert"
                print(f"{verb} {step.file.label}: {step.file.description}")
            else:
                print(f"{verb} {step.file.label} ({step.seconds * 1000:.0f} ms)")
        return 0


async def _migrations_status(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False, migrate=False) as db:
        statuses = await schema_status(db, _sets(args))
    for status in statuses:
        pending = ", ".join(f.label for f in status.pending) or "none"
        print(f"{status.name}: stored version {status.stored}, newest file {status.newest}")
        print(f"  pending: {pending}")
        print(f"  changed since applied: {', '.join(status.drift) or 'none'}")
    too_new = [s for s in statuses if s.stored > s.newest]
    return 4 if too_new else 0


async def _migrations_new(args: argparse.Namespace) -> int:
    path = new_migration_file(Path(args.dir or "migrations"), args.name)
    print(f"created {path}")
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
        description="Durable agent and workflow state in Redis: check the server, migrate "
        "the schema, manage the embedded server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", help="print the server's version, persistence, eviction policy and cluster state"
    )
    _connection_options(check)
    check.set_defaults(handler=_check)

    def set_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--dir", help="an application's migrations folder")
        command.add_argument(
            "--set", default="app", help="name of the application's set (default: app)"
        )

    migrate_command = commands.add_parser(
        "migrate", help="apply pending migrations (built-in set first, then --dir's)"
    )
    _connection_options(migrate_command)
    set_options(migrate_command)
    migrate_command.add_argument(
        "--to", type=int, help="stop the last set at this number (lower: run its downs)"
    )
    migrate_command.add_argument("--dry-run", action="store_true", help="show, change nothing")
    migrate_command.add_argument(
        "--force", action="store_true", help="accept applied files whose checksum changed"
    )
    migrate_command.set_defaults(handler=_migrate)

    migrations = commands.add_parser("migrations", help="inspect and create migration files")
    migration_commands = migrations.add_subparsers(
        dest="migrations_command", metavar="ACTION", required=True
    )
    status = migration_commands.add_parser(
        "status", help="stored version, newest file, pending files and changed files per set"
    )
    _connection_options(status)
    set_options(status)
    status.set_defaults(handler=_migrations_status)
    new = migration_commands.add_parser("new", help="write the next numbered migration file")
    new.add_argument("name", help="what it does, e.g. add_priority")
    new.add_argument("--dir", help="the migrations folder (default: ./migrations)")
    new.set_defaults(handler=_migrations_new)

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
