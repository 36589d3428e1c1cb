"""The ``flue-models`` command line.

Every command connects the way :func:`flue_models.connect` does: ``--url``, then
``$REDIS_URL``, then the embedded server. Errors are printed as one message (never a
traceback) and give a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from flue_models.config import data_dir_from_environment
from flue_models.demo import run_demo
from flue_models.embedded import EmbeddedServer
from flue_models.errors import FlueModelsError
from flue_models.inspection import check_report, read_server
from flue_models.schema import MigrationSet, migrate, new_migration_file, schema_status
from flue_models.startup import connect
from flue_models.state.events import EventStream, event_json
from flue_models.state.run import WorkflowRun
from flue_models.state.session import Session
from flue_models.state.submission import Submission

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


async def _demo(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        await run_demo(db)
    return 0


async def _runs_list(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        page = await WorkflowRun.list(
            status=args.status, workflow=args.workflow, limit=args.limit, cursor=args.cursor, db=db
        )
    if args.json:
        items = [item.model_dump(mode="json") for item in page.items]
        print(json.dumps({"items": items, "next_cursor": page.next_cursor}, ensure_ascii=False))
        return 0
    for item in page.items:
        duration = "" if item.duration_ms is None else f"{item.duration_ms} ms"
        print(
            f"{item.id}  {item.workflow:<12} {item.status:<9} "
            f"{item.started_at.isoformat(timespec='seconds')}  {duration}"
        )
    if page.next_cursor:
        print(f"next: --cursor {page.next_cursor}")
    return 0


async def _runs_show(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        run = await WorkflowRun.get(args.run_id, db=db)
    if run is None:
        print(f"error: no run {args.run_id!r}", file=sys.stderr)
        return 3
    print(json.dumps(run.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return 0


async def _events_read(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        stream: EventStream[dict[str, Any]] = EventStream(args.path, db=db)
        result = await stream.read(after=args.after, limit=args.limit)
    for event in result.events:
        print(event_json(event))
    print(
        f"next_offset={result.next_offset} up_to_date={str(result.up_to_date).lower()} "
        f"closed={str(result.closed).lower()}",
        file=sys.stderr,
    )
    return 0


async def _events_tail(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        stream: EventStream[dict[str, Any]] = EventStream(args.path, db=db)
        async for event in stream.tail(after=args.after):
            print(event_json(event), flush=True)
    return 0


async def _sessions_show(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        session = await Session.load(args.session_id, db=db)
    if session is None:
        print(f"error: no session {args.session_id!r}", file=sys.stderr)
        return 3
    shown = session.model_dump(mode="json")
    entries = session.entries[-args.entries :] if args.entries > 0 else []
    shown["entries"] = [entry.model_dump(mode="json") for entry in entries]
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


async def _submissions_list(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        query = Submission.find().using(db)
        if args.status:
            query = query.where(Submission.status == args.status)
        rows = await query.limit(args.limit).all()
    for row in rows:
        owner = f" owner={row.owner_id}" if row.owner_id else ""
        outcome = f" outcome={row.outcome}" if row.outcome else ""
        print(
            f"{row.sequence:>6}  {row.id}  {row.kind:<8} {row.status:<8} "
            f"session={row.session_id} attempts={row.attempt_count}{owner}{outcome}"
        )
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
        description="Durable agent and workflow state in Redis: run the demo, check the "
        "server, migrate the schema, list runs, read and tail event streams, manage the "
        "embedded server.",
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

    demo = commands.add_parser(
        "demo", help="run a small simulated agent workload, tail a run, list runs by status"
    )
    _connection_options(demo)
    demo.set_defaults(handler=_demo)

    runs = commands.add_parser("runs", help="list and show workflow runs")
    run_commands = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    runs_list = run_commands.add_parser("list", help="runs newest first")
    _connection_options(runs_list)
    runs_list.add_argument("--status", choices=["active", "completed", "errored", "cancelled"])
    runs_list.add_argument("--workflow")
    runs_list.add_argument("--limit", type=int, default=100, help="default 100, at most 1000")
    runs_list.add_argument("--cursor", help="the 'next' cursor a previous page printed")
    runs_list.add_argument("--json", action="store_true", help="one JSON document")
    runs_list.set_defaults(handler=_runs_list)
    runs_show = run_commands.add_parser("show", help="one run, everything, as JSON")
    _connection_options(runs_show)
    runs_show.add_argument("run_id")
    runs_show.set_defaults(handler=_runs_show)

    sessions = commands.add_parser("sessions", help="show agent sessions")
    session_commands = sessions.add_subparsers(
        dest="sessions_command", metavar="ACTION", required=True
    )
    sessions_show = session_commands.add_parser(
        "show", help="a session's record and its last entries, as JSON"
    )
    _connection_options(sessions_show)
    sessions_show.add_argument("session_id")
    sessions_show.add_argument(
        "--entries", type=int, default=20, help="how many of the last entries (default 20)"
    )
    sessions_show.set_defaults(handler=_sessions_show)

    submissions = commands.add_parser("submissions", help="list accepted submissions")
    submission_commands = submissions.add_subparsers(
        dest="submissions_command", metavar="ACTION", required=True
    )
    submissions_list = submission_commands.add_parser("list", help="in admission order")
    _connection_options(submissions_list)
    submissions_list.add_argument("--status", choices=["queued", "running", "settled"])
    submissions_list.add_argument("--limit", type=int, default=100)
    submissions_list.set_defaults(handler=_submissions_list)

    events = commands.add_parser("events", help="read and tail event streams")
    event_commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    events_read = event_commands.add_parser("read", help="events after an offset, as JSON lines")
    events_tail = event_commands.add_parser(
        "tail", help="follow a stream until it closes (Ctrl-C to stop)"
    )
    for command, handler in ((events_read, _events_read), (events_tail, _events_tail)):
        _connection_options(command)
        command.add_argument("path", help="e.g. runs/<run id>")
        command.add_argument("--after", default="-1", help="-1, now, or an offset")
        command.set_defaults(handler=handler)
    events_read.add_argument("--limit", type=int, default=100)

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
    # Ctrl-C stops a command even when it was started with SIGINT ignored (as background
    # jobs of a non-interactive shell are); asyncio.run then turns it into cancellation.
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
