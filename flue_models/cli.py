"""The ``flue-models`` command line.

Every command connects the way :func:`flue_models.connect` does: ``--url``, then
``$REDIS_URL``, then the embedded server. Commands that print data take ``--json``.

Exit status: 0 success, 1 runtime error, 2 usage error, 3 not found, 130 interrupted
(Ctrl-C), 141 output pipe closed. Every error is one line on stderr, ``error: ...``;
``--debug`` (or ``FLUE_DEBUG=1``) adds the traceback. Warnings are one ``warning: ...``
line. Progress of long work is a line on stderr, shown only on a terminal.
"""

from __future__ import annotations

import os
import signal
import sys
from types import TracebackType

# Ctrl-C stops the command from here on, even when it was started with SIGINT ignored
# (as background jobs of a non-interactive shell are). This runs before the heavy
# imports below (``import flue_models`` itself imports nothing), so the window in which
# a Ctrl-C could be lost is the interpreter's own start-up; one that lands during those
# imports ends the process without a traceback.
_SIGINT_AT_START_UP: list[bool] = []


def _start_up_sigint(signum: int, frame: object) -> None:
    _SIGINT_AT_START_UP.append(True)  # remembered: the interrupt may come back disguised
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, _start_up_sigint)  # main() puts the default handler back


def _quiet_interrupt(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    # Python may wrap the KeyboardInterrupt (in a RuntimeError when it lands in a class
    # body's __set_name__, or turn it into a TypeError inside a C module's import, as
    # `import ssl` does): an error after a Ctrl-C arrived during the imports is that Ctrl-C.
    if _SIGINT_AT_START_UP or _interrupted(value):
        sys.stdout.flush()
        os._exit(130)  # interrupted while starting: exit as Ctrl-C does, quietly
    sys.__excepthook__(kind, value, tb)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a Ctrl-C."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


sys.excepthook = _quiet_interrupt

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib
import json
import re
import traceback
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

from redis.exceptions import RedisError

import flue_models
from flue_models.config import data_dir_from_environment
from flue_models.demo import run_demo
from flue_models.embedded import EmbeddedServer
from flue_models.errors import ConfigurationError, FlueModelsError, ServerCheckError
from flue_models.inspection import assess, read_server
from flue_models.model.base import Model
from flue_models.schema import (
    MigrationSet,
    builtin_directory,
    migrate,
    new_migration_file,
    schema_status,
)
from flue_models.schema.split import split_collection
from flue_models.startup import connect
from flue_models.state.events import (
    TAIL_OUTAGE_SECONDS,
    EventStream,
    event_json,
    format_offset,
)
from flue_models.state.integrity import STATE_MODELS, verify_state
from flue_models.state.retention import (
    DEFAULT_PRUNE_LIMIT,
    KIND_NAMES,
    Retention,
    parse_age,
    prune_all,
)
from flue_models.state.run import EndResult, WorkflowRun
from flue_models.state.session import Session
from flue_models.state.submission import Submission
from flue_models.terminal import Progress, one_line, table

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

#: Exit statuses (documented in docs/cli.md).
OK, FAILED, USAGE, NOT_FOUND, INTERRUPTED, PIPE_CLOSED = 0, 1, 2, 3, 130, 141
#: Environment variable that turns on tracebacks, like ``--debug``.
DEBUG_ENV = "FLUE_DEBUG"
#: Environment variable naming the application's migrations folder.
MIGRATIONS_DIR_ENV = "FLUE_MIGRATIONS_DIR"
#: While a command has not stopped after Ctrl-C, it is cancelled again this often (a
#: cancellation that lands while a reply arrives can be lost in the client library).
RECANCEL_SECONDS = 1.0


class NotFound(Exception):
    """What a command asked for does not exist (exit status 3)."""


def _emit(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, sort_keys=True))


def _connection_options(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL, else the embedded server)")
    parser.add_argument("--prefix", default="flue", help="key prefix (default: flue)")
    parser.add_argument(
        "--no-inspect",
        action="store_true",
        help="skip the server checks (for managed services that deny CONFIG and INFO)",
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print one JSON document")


def _offset(text: str) -> str:
    """Accept short offsets (``3``, ``0003``) as well as Flue's full form."""
    return format_offset(int(text)) if text.isdigit() else text


# Commands ----------------------------------------------------------------------------


async def _check(args: argparse.Namespace) -> int:
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=False, migrate=False, check_schema=False
    ) as db:
        report = await read_server(db.client)
        embedded = None if db.embedded is None else str(db.embedded.data_dir)
    caught: list[str] = []
    problem: ServerCheckError | None = None
    if not args.no_inspect:
        problem, caught = assess(report)
    checks = "skipped" if args.no_inspect else "failed" if problem else "passed"
    if args.json:
        _emit(
            {
                "url": db.url.display,
                "prefix": db.keys.prefix,
                "embedded_data_dir": embedded,
                "server": {"family": report.flavor, "version": report.version},
                "cluster": report.cluster_enabled,
                "maxmemory_policy": report.maxmemory_policy,
                "persistence": report.persistence,
                "used_memory": report.used_memory,
                "maxmemory": report.maxmemory,
                "checks": checks,
                "warnings": caught,
            }
        )
    else:
        where = db.url.display + ("" if embedded is None else f" (embedded, data in {embedded})")
        print(f"url: {where}")
        print(f"prefix: {db.keys.prefix}")
        for line in report.lines():
            print(line)
        for message in caught:
            print(f"warning: {one_line(message)}", file=sys.stderr)
        shown = {"skipped": "skipped (--no-inspect)", "passed": "passed (standalone, noeviction)"}
        print(f"checks: {shown.get(checks, checks)}")
    if problem is not None:
        raise problem
    return OK


def _sets(args: argparse.Namespace) -> list[MigrationSet]:
    return [MigrationSet(args.set, args.dir)] if args.dir else []


async def _migrate(args: argparse.Namespace) -> int:
    progress = Progress()
    async with connect(
        args.url,
        key_prefix=args.prefix,
        inspect_server=not args.no_inspect,
        migrate=False,
        check_schema=False,
    ) as db:
        try:
            steps = await migrate(
                db,
                _sets(args),
                to=args.to,
                dry_run=args.dry_run,
                force=args.force,
                progress=progress,
            )
        finally:
            progress.done()
        statuses = await schema_status(db, _sets(args))
    if args.json:
        _emit(
            {
                "dry_run": args.dry_run,
                "steps": [
                    {"file": s.file.label, "direction": s.direction, "seconds": s.seconds}
                    for s in steps
                ],
                "versions": {s.name: s.stored for s in statuses},
            }
        )
        return OK
    if not steps:
        print("up to date: " + ", ".join(f"{s.name} at {s.stored}" for s in statuses))
    for step in steps:
        if args.dry_run:
            verb = "would apply" if step.direction == "up" else "would revert"
            print(f"{verb} {step.file.label}: {step.file.description}")
        else:
            verb = "applied" if step.direction == "up" else "reverted"
            print(f"{verb} {step.file.label} ({step.seconds * 1000:.0f} ms)")
    return OK


async def _migrations_status(args: argparse.Namespace) -> int:
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=False, migrate=False, check_schema=False
    ) as db:
        statuses = await schema_status(db, _sets(args))
    too_new = [s for s in statuses if s.stored > s.newest]
    if args.json:
        _emit(
            [
                {
                    "set": s.name,
                    "stored": s.stored,
                    "newest": s.newest,
                    "pending": [f.label for f in s.pending],
                    "changed_since_applied": s.drift,
                }
                for s in statuses
            ]
        )
    else:
        for status in statuses:
            pending = ", ".join(f.label for f in status.pending) or "none"
            print(f"{status.name}: stored version {status.stored}, newest file {status.newest}")
            print(f"  pending: {pending}")
            print(f"  changed since applied: {', '.join(status.drift) or 'none'}")
    for status in too_new:
        print(
            f"error: the stored {status.name!r} schema ({status.stored}) is newer than this "
            f"installation's newest file ({status.newest}); upgrade flue-models.",
            file=sys.stderr,
        )
    return FAILED if too_new else OK


def _migration_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use lowercase letters, digits and '_' (e.g. add_priority)"
        )
    return text


def _age(text: str) -> dt.timedelta:
    try:
        return parse_age(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if text.isdigit() and int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a port from 0 to 65535")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


async def _migrations_new(args: argparse.Namespace) -> int:
    path = _new_migration(args)
    if args.json:
        _emit({"created": str(path)})
    else:
        print(f"created {path}")
    return OK


def _new_migration(args: argparse.Namespace) -> Path:
    chosen = args.dir or os.environ.get(MIGRATIONS_DIR_ENV) or "migrations"
    directory = Path(chosen).resolve()
    package = Path(flue_models.__file__).resolve().parent
    for own, what in ((builtin_directory().resolve(), "flue-models' own migrations folder"),
                      (package, "the installed flue-models package")):  # fmt: skip
        if _inside(directory, own):
            raise FlueModelsError(
                f"{directory} is inside {what}; migrations of your application go in its "
                f"own folder: pass --dir (or set {MIGRATIONS_DIR_ENV}). Nothing was written."
            )
    return new_migration_file(directory, args.name)


async def _prune(args: argparse.Namespace) -> int:
    chosen = {field: getattr(args, flag) for flag, field in KIND_NAMES.items()}
    policy = Retention(**chosen)
    if not policy.kinds():
        flags = ", ".join(f"--{flag}" for flag in KIND_NAMES)
        print(f"error: nothing to prune: give an age to at least one of {flags}", file=sys.stderr)
        return USAGE
    progress = Progress()
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        try:
            total = await prune_all(
                policy,
                limit=args.limit,
                dry_run=args.dry_run,
                progress=lambda t: progress(", ".join(f"{k} {n}" for k, n in t.counts.items())),
                db=db,
            )
        finally:
            progress.done()
    if args.json:
        _emit(total.as_dict())
        return OK
    verb = "due" if args.dry_run else "removed"
    for flag, field in KIND_NAMES.items():
        if field in total.counts:
            print(f"{flag}: {total.counts[field]} {verb}")
    return OK


def _model(text: str) -> type[Model]:
    module_name, _, name = text.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc} (give module:Class)") from None
    if not (isinstance(found, type) and issubclass(found, Model)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a flue-models Model class")
    return found


async def _verify(args: argparse.Namespace) -> int:
    models = (*STATE_MODELS, *args.model)
    if args.collection:
        known = {m.__flue_spec__.collection for m in models}
        models = tuple(m for m in models if m.__flue_spec__.collection in args.collection)
        unknown = sorted(set(args.collection) - known)
        if unknown:
            names = ", ".join(sorted(known))
            print(f"error: no collection {unknown[0]!r}: known are {names}", file=sys.stderr)
            return USAGE
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        report = await verify_state(models, repair=args.repair, db=db)
    if args.json:
        _emit(report.as_dict())
    else:
        for drift in report.all_drift:
            print(
                f"{drift.kind}: {drift.key} {drift.record_id} ({drift.detail})".replace(" ()", "")
            )
        checked = ", ".join(f"{c.collection} {c.records}" for c in report.collections)
        repaired = f", {report.repaired} repaired" if args.repair else ""
        verdict = "ok" if report.ok else f"{len(report.all_drift)} finding(s)"
        print(f"{verdict}: {checked}, streams {report.streams}{repaired}")
    return OK if report.ok else FAILED


async def _cluster_split(args: argparse.Namespace) -> int:
    progress = Progress()
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect, migrate=False
    ) as db:
        try:
            report = await split_collection(
                db,
                args.collection,
                args.buckets,
                partition_by=args.partition_by,
                progress=progress,
            )
        finally:
            progress.done()
    if args.json:
        _emit(dataclasses.asdict(report))
    else:
        print(
            f"{report.collection}: {report.moved} of {report.records} record(s) moved; "
            f"{report.buckets} bucket(s) now"
        )
    return OK


async def _demo(args: argparse.Namespace) -> int:
    progress = Progress()
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        try:
            await run_demo(db, progress=progress)
        finally:
            progress.done()
    return OK


async def _runs_list(args: argparse.Namespace) -> int:
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
    return _print_page(args, page.items, page.next_cursor, rows)


def _print_page(
    args: argparse.Namespace, items: Sequence[Any], cursor: str | None, rows: list[list[str]]
) -> int:
    """A listing page: JSON (``items`` and ``next_cursor``) or a table and its cursor."""
    if args.json:
        _emit({"items": [item.model_dump(mode="json") for item in items], "next_cursor": cursor})
        return OK
    for line in table(rows):
        print(line.rstrip())
    if cursor:
        print(f"next: --cursor {cursor}")
    return OK


async def _runs_show(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        run = await WorkflowRun.get(args.run_id, db=db)
    if run is None:
        raise NotFound(f"no run {args.run_id!r}")
    shown = run.model_dump(mode="json")
    print(json.dumps(shown, ensure_ascii=False) if args.json else json.dumps(shown, indent=2))
    return OK


async def _runs_cancel(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        outcome = await WorkflowRun.cancel_id(args.run_id, db=db)
    if outcome is EndResult.NOT_FOUND:
        raise NotFound(f"no run {args.run_id!r}")
    if args.json:
        _emit({"run_id": args.run_id, "outcome": outcome.value})
    else:
        done = "cancelled" if outcome is EndResult.ENDED else "had already ended; nothing changed"
        print(f"run {args.run_id}: {done}")
    return OK


async def _existing_stream(args: argparse.Namespace, db: Any) -> EventStream[dict[str, Any]]:
    stream: EventStream[dict[str, Any]] = EventStream(args.path, db=db)
    if await stream.meta() is None:
        raise NotFound(f"no stream {args.path!r}")
    return stream


async def _events_read(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        stream = await _existing_stream(args, db)
        result = await stream.read(after=_offset(args.after), limit=args.limit)
    if args.json:
        _emit(
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


async def _events_tail(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        stream = await _existing_stream(args, db)
        async for event in stream.tail(after=_offset(args.after), outage=args.outage):
            print(event_json(event), flush=True)
    return OK


def bench_folder() -> Path | None:
    """The checkout's ``bench/`` folder (beside an editable install, or under the current
    directory), or ``None``: the benchmarks are not part of the installed package."""
    for root in (Path(flue_models.__file__).resolve().parent.parent, Path.cwd()):
        if (root / "bench" / "__main__.py").is_file():
            return root
    return None


async def _bench(args: argparse.Namespace) -> int:
    root = bench_folder()
    if root is None:
        raise NotFound(
            "no bench/ folder: the benchmarks live in the source checkout; run "
            "'flue-models bench' from it (or 'python -m bench' there)"
        )
    command = [sys.executable, "-m", "bench", *args.bench_args]
    process = await asyncio.create_subprocess_exec(*command, cwd=root)
    return await process.wait()


async def _sessions_list(args: argparse.Namespace) -> int:
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
    return _print_page(args, page.items, page.next_cursor, rows)


async def _sessions_show(args: argparse.Namespace) -> int:
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


async def _submissions_list(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        query = Submission.find().using(db)
        if args.status:
            query = query.where(Submission.status == args.status)
        rows = await query.limit(args.limit).all()
    if args.json:
        _emit([row.model_dump(mode="json") for row in rows])
        return OK
    lines = table(
        [
            [
                str(row.sequence),
                row.id,
                row.kind,
                row.status,
                f"session={row.session_id} attempts={row.attempt_count}"
                + (f" owner={row.owner_id}" if row.owner_id else "")
                + (f" outcome={row.outcome}" if row.outcome else ""),
            ]
            for row in rows
        ]
    )
    for line in lines:
        print(line)
    return OK


async def _submissions_requeue(args: argparse.Namespace) -> int:
    async with connect(args.url, key_prefix=args.prefix, inspect_server=False) as db:
        requeued = await Submission.requeue_expired(args.submission_id, db=db)
        row = None if requeued else await Submission.get(args.submission_id, db=db)
    if not requeued and row is None:
        raise NotFound(f"no submission {args.submission_id!r}")
    if args.json:
        _emit({"submission_id": args.submission_id, "requeued": requeued})
    elif requeued:
        print(f"submission {args.submission_id}: requeued")
    if not requeued:
        raise FlueModelsError(
            f"submission {args.submission_id!r} was not requeued: it is not running with an "
            "expired lease, or its input was applied (recover it with replace_attempt)"
        )
    return OK


async def _serve(args: argparse.Namespace) -> int:
    try:
        from flue_models.web import serve
    except ImportError as exc:  # the optional extra is missing
        raise FlueModelsError(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            "pip install 'flue-models[web]'"
        ) from exc
    return await serve(args)


def _server_for(args: argparse.Namespace) -> EmbeddedServer:
    return EmbeddedServer(Path(args.data_dir) if args.data_dir else data_dir_from_environment())


async def _server_status(args: argparse.Namespace) -> int:
    server = _server_for(args)
    record = server.running()
    identity = server.recorded_identity()
    if args.json:
        _emit(
            {
                "running": record is not None,
                "data_dir": str(server.data_dir),
                "pid": record.pid if record else None,
                "url": record.url if record else None,
                "binary": record.binary if record else None,
                "written_by": identity.label if identity else None,
            }
        )
    elif record is None:
        print(f"embedded server: not running (data in {server.data_dir})")
    else:
        print(f"embedded server: running, pid {record.pid}, {record.url}")
        print(f"data: {server.data_dir}")
        print(f"binary: {record.binary}")
        if identity is not None:
            print(f"data written by: {identity.label}")
    return OK if record is not None else NOT_FOUND


async def _server_stop(args: argparse.Namespace) -> int:
    server = _server_for(args)
    async with server.locked():
        stopped = await asyncio.to_thread(server.stop)
    if args.json:
        _emit({"stopped": stopped})
    else:
        print("embedded server: stopped" if stopped else "embedded server: was not running")
    return OK


# The parser --------------------------------------------------------------------------


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
        epilog="Exit status: 0 success, 1 error, 2 usage error, 3 not found.",
    )
    parser.add_argument(
        "--version", action="version", version=f"flue-models {flue_models.__version__}"
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks of errors (or {DEBUG_ENV}=1)"
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
    new = migration_commands.add_parser(
        "new", help="write the next numbered migration file of your application"
    )
    new.add_argument("name", type=_migration_name, help="what it does, e.g. add_priority")
    new.add_argument(
        "--dir", help=f"the migrations folder (default: ${MIGRATIONS_DIR_ENV}, else ./migrations)"
    )
    new.add_argument("--json", action="store_true", help="print one JSON document")
    new.set_defaults(handler=_migrations_new)

    demo = commands.add_parser(
        "demo", help="run a small simulated agent workload, tail a run, list runs by status"
    )
    _connection_options(demo, json_output=False)
    demo.set_defaults(handler=_demo)

    prune_command = commands.add_parser(
        "prune",
        help="remove ended state older than the given ages (retention)",
        description="Remove what is older than the given ages, in bounded batches, until "
        "nothing more is due. Kinds without an age are kept. Ages: 30d, 12h, 45m, 90s.",
    )
    _connection_options(prune_command)
    for flag, what in (
        ("runs", "ended runs (and their event streams) that ended longer ago"),
        ("submissions", "settled submissions (and journals; dispatches keep a receipt)"),
        ("receipts", "receipts of removed dispatches kept longer ago"),
        ("streams", "event streams closed longer ago"),
        ("markers", "attempt markers created longer ago"),
    ):
        prune_command.add_argument(f"--{flag}", type=_age, metavar="AGE", help=what)
    prune_command.add_argument(
        "--limit", type=int, default=DEFAULT_PRUNE_LIMIT, help="items per batch and kind"
    )
    prune_command.add_argument(
        "--dry-run", action="store_true", help="count what is due; remove nothing"
    )
    prune_command.set_defaults(handler=_prune)

    bench = commands.add_parser(
        "bench",
        help="the benchmarks against raw redis-py (from a source checkout)",
        description="Run python -m bench in the source checkout; options go to it "
        "(--json, --runs N, --quick, --full, --no-om, --url URL).",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for the harness")
    bench.set_defaults(handler=_bench)

    verify = commands.add_parser(
        "verify",
        help="check rows against indexes, claims, streams and runs (exit 1 on drift)",
        description="Check every row against its index entries and unique claims, every "
        "stream against its events, every run against its stream. --repair rebuilds what "
        "is derived from the rows (the truth), then checks again.",
    )
    _connection_options(verify)
    verify.add_argument(
        "--collection", action="append", default=[], help="only this collection (repeatable)"
    )
    verify.add_argument(
        "--model",
        action="append",
        default=[],
        type=_model,
        metavar="MODULE:CLASS",
        help="also an application model, e.g. myapp.models:Ticket (repeatable)",
    )
    verify.add_argument("--repair", action="store_true", help="rebuild derived data from rows")
    verify.set_defaults(handler=_verify)

    runs = commands.add_parser("runs", help="list and show workflow runs")
    run_commands = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    runs_list = run_commands.add_parser("list", help="runs newest first")
    _connection_options(runs_list)
    runs_list.add_argument("--status", choices=["active", "completed", "errored", "cancelled"])
    runs_list.add_argument("--workflow")
    runs_list.add_argument("--limit", type=int, default=100, help="default 100, at most 1000")
    runs_list.add_argument("--cursor", help="the 'next' cursor a previous page printed")
    runs_list.set_defaults(handler=_runs_list)
    runs_show = run_commands.add_parser("show", help="one run, everything, as JSON")
    _connection_options(runs_show)
    runs_show.add_argument("run_id")
    runs_show.set_defaults(handler=_runs_show)
    runs_cancel = run_commands.add_parser("cancel", help="cancel an active run")
    _connection_options(runs_cancel)
    runs_cancel.add_argument("run_id")
    runs_cancel.set_defaults(handler=_runs_cancel)

    sessions = commands.add_parser("sessions", help="list and show agent sessions")
    session_commands = sessions.add_subparsers(
        dest="sessions_command", metavar="ACTION", required=True
    )
    sessions_list = session_commands.add_parser("list", help="most recently updated first")
    _connection_options(sessions_list)
    sessions_list.add_argument("--agent", help="the first part of session_key ids")
    sessions_list.add_argument("--instance", help="the second part")
    sessions_list.add_argument("--harness", help="the third part")
    sessions_list.add_argument("--fork-of", help="the forks of this session")
    sessions_list.add_argument("--limit", type=int, default=100, help="default 100, at most 1000")
    sessions_list.add_argument("--cursor", help="the 'next' cursor a previous page printed")
    sessions_list.set_defaults(handler=_sessions_list)
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
    submissions_requeue = submission_commands.add_parser(
        "requeue", help="give a submission whose lease expired back to the queue"
    )
    _connection_options(submissions_requeue)
    submissions_requeue.add_argument("submission_id")
    submissions_requeue.set_defaults(handler=_submissions_requeue)

    events = commands.add_parser("events", help="read and tail event streams")
    event_commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    events_read = event_commands.add_parser("read", help="events after an offset, as JSON lines")
    events_tail = event_commands.add_parser(
        "tail", help="follow a stream until it closes, as JSON lines (Ctrl-C to stop)"
    )
    for command, handler in ((events_read, _events_read), (events_tail, _events_tail)):
        _connection_options(command, json_output=command is events_read)
        command.add_argument("path", help="e.g. runs/<run id>")
        command.add_argument(
            "--after", default="-1", help="-1, now, or an offset (3, 0003 or Flue's full form)"
        )
        command.set_defaults(handler=handler)
    events_read.add_argument("--limit", type=int, default=100)
    events_tail.add_argument(
        "--outage",
        type=float,
        default=TAIL_OUTAGE_SECONDS,
        metavar="SECONDS",
        help="how long to keep reconnecting to a server that went away (default 60)",
    )

    serve = commands.add_parser(
        "serve",
        help="the web dashboard (the 'web' extra): runs, sessions, submissions, streams",
        description="Serve the dashboard and its JSON API. Read-only unless --allow-actions. "
        "It binds to loopback; another address needs --auth, whose secret is read from "
        "$FLUE_WEB_SECRET (a token, or user:password for basic).",
    )
    _connection_options(serve, json_output=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)"
    )
    serve.add_argument(
        "--auth",
        choices=["token", "basic"],
        help="require $FLUE_WEB_SECRET as a bearer token or as basic auth user:password",
    )
    serve.add_argument(
        "--allow-actions",
        action="store_true",
        help="allow cancelling runs, requeueing expired submissions and pruning",
    )
    serve.set_defaults(handler=_serve)

    cluster = commands.add_parser("cluster", help="prepare a store for Redis Cluster")
    cluster_commands = cluster.add_subparsers(
        dest="cluster_command", metavar="ACTION", required=True
    )
    split = cluster_commands.add_parser(
        "split",
        help="move a collection's records into N buckets (standalone server, writers stopped)",
        description="Move every record of COLLECTION whose bucket changes, with its index "
        "entries and owned keys, one atomic call per record, then record the count; "
        "declare the same Meta.buckets in its model. Checks everything before the first "
        "move; safe to run again after a failure.",
    )
    _connection_options(split)
    split.add_argument("collection", help="the collection (its Meta.collection)")
    split.add_argument(
        "--buckets", type=int, required=True, help="the new bucket count (a power of two)"
    )
    split.add_argument(
        "--partition-by",
        metavar="FIELD",
        help="the field that places each record (its model's Meta.partition_by); default: "
        "the one the store records, else id",
    )
    split.set_defaults(handler=_cluster_split)

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
        action.add_argument("--json", action="store_true", help="print one JSON document")
        action.set_defaults(handler=handler)
    return parser


# Running -----------------------------------------------------------------------------


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    """Run ``handler`` in a fresh event loop; the first Ctrl-C cancels it, for sure.

    A cancellation that lands just as a reply arrives can be swallowed below us, so the
    command is cancelled again every second until it has stopped.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(handler(args))
    interrupted = False

    def cancel_until_done() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(RECANCEL_SECONDS, cancel_until_done)

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        cancel_until_done()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _message(exc: BaseException) -> str:
    if isinstance(exc, FlueModelsError | NotFound):
        return one_line(str(exc))
    if isinstance(exc, RedisError):
        return one_line(f"the Redis server connection failed ({type(exc).__name__}: {exc})")
    return one_line(f"{type(exc).__name__}: {exc}") + " (this is a bug; --debug shows where)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flue-models`` command line and return its exit status.

    Example:
        ```console
        $ flue-models check
        url: redis://127.0.0.1:41235/0 (embedded, data in /home/me/app/.flue/redis)
        ...
        ```
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)  # main() may be called again
    if _SIGINT_AT_START_UP:  # a Ctrl-C during the imports that Python swallowed (one that
        return INTERRUPTED  # lands in a finalizer is only printed as "ignored")
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if args.handler is _bench:  # its options are the harness's: all of them, in order
            given = list(sys.argv[1:] if argv is None else argv)
            args.bench_args = given[given.index("bench") + 1 :]
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        debug = debug or args.debug
        warnings.showwarning = _show_warning
        return _run(args.handler, args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # e.g. `flue-models runs list | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return PIPE_CLOSED
    except Exception as exc:
        if _interrupted(exc):
            return INTERRUPTED
        if debug:
            traceback.print_exc()
        print(f"error: {_message(exc)}", file=sys.stderr)
        return NOT_FOUND if isinstance(exc, NotFound) else FAILED


if __name__ == "__main__":
    raise SystemExit(main())
