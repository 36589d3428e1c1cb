"""The parser of every ``flue-models`` command.

It imports nothing of the library but its light modules: each command names its
handler as ``"<module>:<function>"`` of this package, imported only when that command
runs, so ``flue-models --version`` and ``--help`` never load redis-py or pydantic.

Example:
    ```python
    args = build_parser().parse_args(["runs", "list", "--limit", "5"])
    args.handler   # 'runs:runs_list'
    ```
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import flue_models

if TYPE_CHECKING:
    from flue_models.model.base import Model

#: Environment variable that turns on tracebacks, like ``--debug``.
DEBUG_ENV = "FLUE_DEBUG"
#: Environment variable naming the application's migrations folder.
MIGRATIONS_DIR_ENV = "FLUE_MIGRATIONS_DIR"


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argument type that runs one of the library's own checks: its refusal (a
    ``ConfigurationError``) becomes a usage error, exit 2, with the library's message."""

    def check_text(text: str) -> str:
        from flue_models.errors import ConfigurationError

        try:
            check(text)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check_text


def _url(text: str) -> None:
    from flue_models.config import parse_url

    parse_url(text)


def _prefix(text: str) -> None:
    from flue_models.keys import normalize_prefix

    normalize_prefix(text)


def _cursor(text: str) -> None:
    from flue_models.model.planner import cursor_parts

    cursor_parts(text)


def _stream_path(text: str) -> None:
    from flue_models.errors import ConfigurationError

    if not text:
        raise ConfigurationError("a stream path is not empty, e.g. runs/<run id>")


def offset(text: str) -> str:
    """An ``--after`` value: ``-1``, ``now``, Flue's full offset, or its short form (``3``,
    ``0003``: the last part, as the demo and the dashboard print it), as the full form.

    Example:
        >>> offset("3")
        '0000000000000000_0000000000000003'
    """
    from flue_models.errors import ConfigurationError
    from flue_models.state.events import NOW, parse_offset

    full = f"{0:016d}_{int(text):016d}" if text.isdigit() and text.isascii() else text
    if full != NOW:
        try:
            parse_offset(full)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return full


def counted(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high`` (no bound: ``None``).

    Example:
        >>> counted(1, 1000)("20")
        20
    """

    def count(text: str) -> int:
        value = int(text) if re.fullmatch(r"-?[0-9]+", text) else None
        if value is None or value < low or (high is not None and value > high):
            upper = f" to {high:,}" if high is not None else " or more"
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from {low}{upper}")
        return value

    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds, 0 or more")
    return value


def _buckets(text: str) -> int:
    from flue_models.keys import MAX_BUCKETS, is_bucket_count

    value = int(text) if re.fullmatch(r"[0-9]+", text) else None
    if value is None or not is_bucket_count(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a power of two from 1 to {MAX_BUCKETS}")
    return value


def connection_options(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """Give a command the options of a connection (``--url``, ``--prefix``,
    ``--no-inspect``) and, unless ``json_output`` is false, ``--json``.

    Example:
        ```python
        connection_options(commands.add_parser("check"))
        ```
    """
    parser.add_argument(
        "--url",
        type=_checked(_url),
        help="Redis URL (default: $REDIS_URL, else the embedded server)",
    )
    parser.add_argument(
        "--prefix", type=_checked(_prefix), default="flue", help="key prefix (default: flue)"
    )
    parser.add_argument(
        "--no-inspect",
        action="store_true",
        help="skip the server checks (for managed services that deny CONFIG and INFO)",
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print one JSON document")


def page_options(parser: argparse.ArgumentParser, cursor: bool = True) -> None:
    """Give a listing command ``--limit`` and (unless ``cursor`` is false) ``--cursor``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> page_options(parser)
        >>> parser.parse_args(["--limit", "5"]).limit
        5
    """
    parser.add_argument(
        "--limit",
        type=counted(0),
        metavar="N",
        help="how many (default 100, at most 1000; 0: the default)",
    )
    if cursor:
        parser.add_argument(
            "--cursor",
            type=_checked(_cursor),
            help="continue a listing: the 'next' cursor a previous page printed",
        )


def _migration_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use lowercase letters, digits and '_' (e.g. add_priority)"
        )
    return text


def _age(text: str) -> dt.timedelta:
    from flue_models.errors import ConfigurationError
    from flue_models.state.retention import parse_age

    try:
        return parse_age(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if text.isdigit() and int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a port from 0 to 65535")


def _model(text: str) -> type[Model]:
    from flue_models.model.base import Model

    module_name, _, name = text.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc} (give module:Class)") from None
    if not (isinstance(found, type) and issubclass(found, Model)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a flue-models Model class")
    return found


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on standard error, exit 2.

    Example:
        ```python
        Parser(prog="flue-models").error("no such option")   # error: ... (exit 2)
        ```
    """

    def error(self, message: str) -> NoReturn:
        """Print ``error: <command>: <message>`` and a pointer to the help; exit 2."""
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every ``flue-models`` command.

    Example:
        >>> "check" in build_parser().format_help()
        True
    """
    parser = Parser(
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
    connection_options(check)
    check.set_defaults(handler="server:check")

    def set_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--dir", help="an application's migrations folder")
        command.add_argument(
            "--set", default="app", help="name of the application's set (default: app)"
        )

    migrate_command = commands.add_parser(
        "migrate", help="apply pending migrations (built-in set first, then --dir's)"
    )
    connection_options(migrate_command)
    set_options(migrate_command)
    migrate_command.add_argument(
        "--to",
        type=counted(0),
        metavar="N",
        help="stop the last set at this number (lower: run its downs)",
    )
    migrate_command.add_argument("--dry-run", action="store_true", help="show, change nothing")
    migrate_command.add_argument(
        "--force", action="store_true", help="accept applied files whose checksum changed"
    )
    migrate_command.set_defaults(handler="migrations:migrate_store")

    migrations = commands.add_parser("migrations", help="inspect and create migration files")
    migration_commands = migrations.add_subparsers(
        dest="migrations_command", metavar="ACTION", required=True
    )
    status = migration_commands.add_parser(
        "status", help="stored version, newest file, pending files and changed files per set"
    )
    connection_options(status)
    set_options(status)
    status.set_defaults(handler="migrations:migrations_status")
    new = migration_commands.add_parser(
        "new", help="write the next numbered migration file of your application"
    )
    new.add_argument("name", type=_migration_name, help="what it does, e.g. add_priority")
    new.add_argument(
        "--dir", help=f"the migrations folder (default: ${MIGRATIONS_DIR_ENV}, else ./migrations)"
    )
    new.add_argument("--json", action="store_true", help="print one JSON document")
    new.set_defaults(handler="migrations:migrations_new")

    demo = commands.add_parser(
        "demo", help="run a small simulated agent workload, tail a run, list runs by status"
    )
    connection_options(demo, json_output=False)
    demo.set_defaults(handler="demo:demo")

    prune_command = commands.add_parser(
        "prune",
        help="remove ended state older than the given ages (retention)",
        description="Remove what is older than the given ages, in bounded batches, until "
        "nothing more is due. Kinds without an age are kept. Ages: 30d, 12h, 45m, 90s.",
    )
    connection_options(prune_command)
    for flag, what in (
        ("runs", "ended runs (and their event streams) that ended longer ago"),
        ("submissions", "settled submissions (and journals; dispatches keep a receipt)"),
        ("receipts", "receipts of removed dispatches kept longer ago"),
        ("streams", "event streams closed longer ago"),
        ("markers", "attempt markers created longer ago"),
    ):
        prune_command.add_argument(f"--{flag}", type=_age, metavar="AGE", help=what)
    prune_command.add_argument(
        "--limit", type=counted(1), metavar="N", help="items per batch and kind (default 500)"
    )
    prune_command.add_argument(
        "--dry-run", action="store_true", help="count what is due; remove nothing"
    )
    prune_command.set_defaults(handler="maintenance:prune_store")

    bench = commands.add_parser(
        "bench",
        help="the benchmarks against raw redis-py (from a source checkout)",
        description="Run python -m bench in the source checkout; options go to it "
        "(--json, --runs N, --quick, --full, --no-om, --url URL).",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for the harness")
    bench.set_defaults(handler="bench:bench")

    verify = commands.add_parser(
        "verify",
        help="check rows against indexes, claims, streams and runs (exit 1 on drift)",
        description="Check every row against its index entries and unique claims, every "
        "stream against its events, every run against its stream. --repair rebuilds what "
        "is derived from the rows (the truth), then checks again.",
    )
    connection_options(verify)
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
    verify.set_defaults(handler="maintenance:verify_store")

    runs = commands.add_parser("runs", help="list and show workflow runs")
    run_commands = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    runs_list = run_commands.add_parser("list", help="runs newest first")
    connection_options(runs_list)
    runs_list.add_argument(
        "--status", choices=["active", "completed", "errored", "cancelled"], help="only these"
    )
    runs_list.add_argument("--workflow", help="only runs of this workflow")
    page_options(runs_list)
    runs_list.set_defaults(handler="runs:runs_list")
    runs_show = run_commands.add_parser("show", help="one run, everything, as JSON")
    connection_options(runs_show)
    runs_show.add_argument("run_id", help="the run's id")
    runs_show.set_defaults(handler="runs:runs_show")
    runs_cancel = run_commands.add_parser("cancel", help="cancel an active run")
    connection_options(runs_cancel)
    runs_cancel.add_argument("run_id", help="the run's id")
    runs_cancel.set_defaults(handler="runs:runs_cancel")

    sessions = commands.add_parser("sessions", help="list and show agent sessions")
    session_commands = sessions.add_subparsers(
        dest="sessions_command", metavar="ACTION", required=True
    )
    sessions_list = session_commands.add_parser("list", help="most recently updated first")
    connection_options(sessions_list)
    sessions_list.add_argument("--agent", help="the first part of session_key ids")
    sessions_list.add_argument("--instance", help="the second part")
    sessions_list.add_argument("--harness", help="the third part")
    sessions_list.add_argument("--fork-of", help="the forks of this session")
    page_options(sessions_list)
    sessions_list.set_defaults(handler="sessions:sessions_list")
    sessions_show = session_commands.add_parser(
        "show", help="a session's record and its last entries, as JSON"
    )
    connection_options(sessions_show)
    sessions_show.add_argument("session_id", help="the session's id")
    sessions_show.add_argument(
        "--entries",
        type=counted(0),
        default=20,
        help="how many of the last entries (default 20)",
    )
    sessions_show.set_defaults(handler="sessions:sessions_show")

    submissions = commands.add_parser("submissions", help="list accepted submissions")
    submission_commands = submissions.add_subparsers(
        dest="submissions_command", metavar="ACTION", required=True
    )
    submissions_list = submission_commands.add_parser("list", help="in admission order")
    connection_options(submissions_list)
    submissions_list.add_argument(
        "--status", choices=["queued", "running", "settled"], help="only these"
    )
    page_options(submissions_list)
    submissions_list.set_defaults(handler="submissions:submissions_list")
    submissions_requeue = submission_commands.add_parser(
        "requeue", help="give a submission whose lease expired back to the queue"
    )
    connection_options(submissions_requeue)
    submissions_requeue.add_argument("submission_id", help="the submission's id")
    submissions_requeue.set_defaults(handler="submissions:submissions_requeue")

    events = commands.add_parser("events", help="read and tail event streams")
    event_commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    events_read = event_commands.add_parser("read", help="events after an offset, as JSON lines")
    events_tail = event_commands.add_parser(
        "tail", help="follow a stream until it closes, as JSON lines (Ctrl-C to stop)"
    )
    for command, handler in (
        (events_read, "events:events_read"),
        (events_tail, "events:events_tail"),
    ):
        connection_options(command, json_output=command is events_read)
        command.add_argument("path", type=_checked(_stream_path), help="e.g. runs/<run id>")
        command.add_argument(
            "--after",
            type=offset,
            default="-1",
            help="-1, now, or an offset (3, 0003 or Flue's full form)",
        )
        command.set_defaults(handler=handler)
    page_options(events_read, cursor=False)
    events_tail.add_argument(
        "--outage",
        type=_seconds,
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
    connection_options(serve, json_output=False)
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
    serve.set_defaults(handler="dashboard:serve")

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
    connection_options(split)
    split.add_argument("collection", help="an application collection (its Meta.collection)")
    split.add_argument(
        "--buckets",
        type=_buckets,
        required=True,
        metavar="N",
        help="the new bucket count (a power of two from 1 to 1024)",
    )
    split.add_argument(
        "--model",
        type=_model,
        metavar="MODULE:CLASS",
        help="the collection's model, e.g. myapp.models:Ticket: needed for a collection that "
        "holds no record yet",
    )
    split.add_argument(
        "--partition-by",
        metavar="FIELD",
        help="the field that places each record (its model's Meta.partition_by); default: "
        "the one the store records, else id",
    )
    split.set_defaults(handler="maintenance:cluster_split")

    server = commands.add_parser("server", help="manage the embedded server (status, stop)")
    server_commands = server.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("status", "server:server_status", "show whether the embedded server runs, and where"),
        ("stop", "server:server_stop", "stop the embedded server (its data stays on disk)"),
    ):
        action = server_commands.add_parser(name, help=text)
        action.add_argument(
            "--data-dir", help="data directory (default: $FLUE_DATA_DIR or ./.flue/redis)"
        )
        action.add_argument("--json", action="store_true", help="print one JSON document")
        action.set_defaults(handler=handler)
    return parser
