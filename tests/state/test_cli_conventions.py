"""The command line follows the conventions of git, redis-cli and alembic (docs/cli.md)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import flue_models as fm
from flue_models import WorkflowRun, cli
from flue_models.terminal import display_width
from tests.command_line import ROOT, run_cli
from tests.conftest import RedisServers
from tests.not_redis import not_redis_port
from tests.waiting import child_process, within


@pytest.fixture
def protocol() -> int:
    """The command line speaks redis-py's default protocol: one run of each test is enough."""
    return 3


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line of a failed command (and nothing else)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_version_and_usage_errors() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"flue-models {fm.__version__}"
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("runs", "list", "--limit", "many").returncode == 2


def test_runtime_errors_are_one_line_with_exit_1(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    refused = run_cli("runs", "list", "--url", f"{base}/99")
    assert refused.returncode == 1
    assert "refused database 99" in one_error_line(refused.stderr)
    unreachable = run_cli("check", "--url", "redis://127.0.0.1:1/0")
    assert unreachable.returncode == 1
    assert "Could not connect" in one_error_line(unreachable.stderr)


def test_debug_shows_the_traceback(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    flag = run_cli("--debug", "runs", "list", "--url", f"{base}/99")
    assert flag.returncode == 1
    assert "Traceback" in flag.stderr
    assert flag.stderr.rstrip().splitlines()[-1].startswith("error: ")
    env = dict(os.environ, FLUE_DEBUG="1")
    assert "Traceback" in run_cli("runs", "list", "--url", f"{base}/99", env=env).stderr


def test_a_wrong_password_says_authentication_failed(redis_servers: RedisServers) -> None:
    server = redis_servers.start("--requirepass", "Sup3rS3cret")
    result = run_cli("check", "--url", f"redis://:nope@127.0.0.1:{server.port}/0")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "authentication failed" in line
    assert "nope" not in line


async def test_a_port_that_is_not_redis_is_one_line() -> None:
    async with not_redis_port() as port:
        result = await asyncio.to_thread(run_cli, "check", "--url", f"redis://127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert "not a Redis or Valkey server" in one_error_line(result.stderr)


async def test_not_found_is_exit_3(db: fm.Database, redis_url: str) -> None:
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    for args in (
        ("runs", "show", "nope"),
        ("sessions", "show", "nope"),
        ("events", "read", "runs/nope"),
        ("events", "tail", "runs/nope"),  # would otherwise wait forever
    ):
        result = await asyncio.to_thread(run_cli, *args, *common)
        assert result.returncode == 3, (args, result.stderr)
        assert "no " in one_error_line(result.stderr)
    stream = await asyncio.to_thread(run_cli, "events", "read", "runs/nope", *common)
    assert "no stream 'runs/nope'" in stream.stderr


async def test_short_offsets_are_accepted(db: fm.Database, redis_url: str) -> None:
    stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/short")
    await stream.create()
    await stream.append_many([{"n": 1}, {"n": 2}, {"n": 3}])
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    for after in ("1", "0001", "0000000000000000_0000000000000001"):  # the second event
        result = await asyncio.to_thread(
            run_cli, "events", "read", "runs/short", "--after", after, *common
        )
        assert result.returncode == 0, result.stderr
        assert [json.loads(line)["data"]["n"] for line in result.stdout.splitlines()] == [3]


async def test_every_data_command_prints_json(db: fm.Database, redis_url: str) -> None:
    run = await WorkflowRun.start("w", run_id="r-json")
    await run.events.append({"n": 1})
    await fm.Session.open("s-json")
    await fm.Submission.admit_direct("p-json", session_id="s-json", input={})
    common = ["--url", redis_url, "--prefix", db.keys.prefix, "--json"]
    commands = [
        ("check",),
        ("migrate",),
        ("migrations", "status"),
        ("runs", "list"),
        ("runs", "show", "r-json"),
        ("sessions", "show", "s-json"),
        ("submissions", "list"),
        ("events", "read", "runs/r-json"),
    ]
    for command in commands:
        result = await asyncio.to_thread(run_cli, *command, *common)
        assert result.returncode == 0, (command, result.stderr)
        assert len(result.stdout.splitlines()) == 1, command  # one document
        json.loads(result.stdout)
    listed = json.loads((await asyncio.to_thread(run_cli, "runs", "list", *common)).stdout)
    assert listed["items"][0]["id"] == "r-json"
    read = json.loads(
        (await asyncio.to_thread(run_cli, "events", "read", "runs/r-json", *common)).stdout
    )
    assert (read["events"][0]["data"], read["up_to_date"]) == ({"n": 1}, True)


#: The bad-input table of docs/cli.md: each malformed or impossible argument, its exit
#: status, and what its one error line names. {url} and {prefix} are the test's server.
BAD_INPUT: list[tuple[tuple[str, ...], int, str]] = [
    (("no-such-command",), 2, "invalid choice: 'no-such-command'"),
    (("runs", "lst"), 2, "invalid choice: 'lst'"),
    (("runs", "list", "--limit", "many"), 2, "'many': give a whole number from 0 or more"),
    (("submissions", "list", "--limit", "-1"), 2, "'-1': give a whole number from 0"),
    (("sessions", "list", "--limit", "2.5"), 2, "'2.5': give a whole number"),
    (("sessions", "show", "s", "--entries", "-2"), 2, "'-2': give a whole number from 0"),
    (("runs", "list", "--cursor", "garbage"), 2, "Malformed cursor 'garbage'"),
    (("runs", "list", "--cursor", "gQ"), 2, "Malformed cursor 'gQ'"),  # not UTF-8
    (("submissions", "list", "--cursor", "e30"), 2, "Malformed cursor 'e30'"),  # {}
    (("events", "read", "runs/x", "--after", "garbage"), 2, "Malformed offset 'garbage'"),
    (("events", "read", ""), 2, "a stream path is not empty"),
    (("events", "tail", "runs/x", "--outage", "nan"), 2, "'nan': give a number of seconds"),
    (("cluster", "split", "ticket", "--buckets", "3"), 2, "'3': give a power of two"),
    (("check", "--url", "garbage"), 2, "unsupported scheme"),
    (("check", "--url", "http://nope"), 2, "unsupported scheme"),
    (("check", "--url", "redis://127.0.0.1:1/0?db=x"), 2, "the database 'x' is not a number"),
    (("check", "--prefix", ""), 2, "The key prefix '' is empty"),
    (("prune", "--runs", "5x"), 2, "--runs"),
    (("prune", "--limit", "0"), 2, "'0': give a whole number from 1"),
    (("migrate", "--to", "-3"), 2, "'-3': give a whole number from 0"),
    (("serve", "--port", "70000"), 2, "give a port from 0 to 65535"),
    (("migrations", "new", "Add-X"), 2, "use lowercase letters"),
    # Well-formed, refused once the command ran:
    (("check", "--url", "{base}?socket_timeout=abc"), 2, "Invalid value for 'socket_timeout'"),
    (("runs", "list", "--cursor", "{other_cursor}"), 2, "made by a different query"),
    (("events", "read", "runs/three", "--after", "9"), 2, "is beyond the head"),
    (("cluster", "split", "tikcet", "--buckets", "4"), 2, "No collection 'tikcet'"),
    (("cluster", "split", "session", "--buckets", "4"), 2, "one of flue-models' own"),
    (("runs", "show", "nope"), 3, "no run 'nope'"),
    (("events", "read", "runs/nope"), 3, "no stream 'runs/nope'"),
    (("runs", "list", "--url", "{server}/99"), 1, "refused database 99"),
]


@pytest.mark.standalone  # a split needs a standalone server (a cluster refuses it otherwise)
async def test_the_bad_input_table(db: fm.Database, redis_url: str) -> None:
    stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/three")
    await stream.create()
    await stream.append_many([{"n": 1}, {"n": 2}, {"n": 3}])
    await fm.Submission.admit_direct("p-1", session_id="s", input={})
    await fm.Submission.admit_direct("p-2", session_id="s", input={})
    other = await fm.Submission.find().page(limit=1)  # a cursor of another listing
    assert other.next_cursor is not None
    server = redis_url.rsplit("/", 1)[0]
    values = {"base": redis_url, "server": server, "other_cursor": other.next_cursor}

    def run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        given = [arg.format(**values) for arg in args]
        if args[0] not in ("no-such-command", "migrations", "serve") and "--url" not in args:
            given += ["--url", redis_url]
        if args[0] not in ("no-such-command", "migrations") and "--prefix" not in args:
            given += ["--prefix", db.keys.prefix]
        return run_cli(*given)

    results = await asyncio.gather(*(asyncio.to_thread(run, args) for args, _, _ in BAD_INPUT))
    for (args, status, named), result in zip(BAD_INPUT, results, strict=True):
        line = one_error_line(result.stderr)
        assert (result.returncode, named in line) == (status, True), (args, result.stderr)
        for internal in ("this is a bug", "Traceback", "codec can't", "KeyError", "usage:"):
            assert internal not in result.stderr, (args, result.stderr)
    assert await fm.Submission.find().count() == 2  # nothing was written by any of them
    assert await db.client.hget(db.keys.meta, "buckets:tikcet") is None


async def test_every_listing_has_one_shape_and_says_when_it_is_empty(
    db: fm.Database, redis_url: str
) -> None:
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    for kind in ("runs", "sessions", "submissions"):
        empty = await asyncio.to_thread(run_cli, kind, "list", *common)
        assert (empty.returncode, empty.stdout, empty.stderr.strip()) == (0, "", f"no {kind}")
        shaped = await asyncio.to_thread(run_cli, kind, "list", "--json", *common)
        assert json.loads(shaped.stdout) == {"items": [], "next_cursor": None}
    for n in range(3):
        await fm.Submission.admit_direct(f"p-{n}", session_id="s", input={"n": n})
    first = json.loads(
        (
            await asyncio.to_thread(
                run_cli, "submissions", "list", "--limit", "2", "--json", *common
            )
        ).stdout
    )
    cursor = first["next_cursor"]
    rest = json.loads(
        (
            await asyncio.to_thread(
                run_cli, "submissions", "list", "--cursor", cursor, "--json", *common
            )
        ).stdout
    )
    assert [r["id"] for r in first["items"] + rest["items"]] == ["p-0", "p-1", "p-2"]
    assert rest["next_cursor"] is None


def test_every_subcommand_is_in_its_help() -> None:
    parser = cli.build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, command in action.choices.items():
            for sub in command._subparsers._group_actions if command._subparsers else []:
                shown = command.format_help()
                for child in sub.choices:
                    assert child in shown, (name, child)
            assert name in parser.format_help()


def test_a_persistence_warning_is_one_line(redis_servers: RedisServers) -> None:
    server = redis_servers.start("--appendonly", "no", "--save", "")
    result = run_cli("migrate", "--url", server.url)  # inspects the server
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: The server keeps nothing on disk")
    assert "PersistenceWarning" not in result.stderr


async def test_columns_line_up_with_wide_characters(db: fm.Database, redis_url: str) -> None:
    await WorkflowRun.start("日報", run_id="r-wide")
    await WorkflowRun.start("translate", run_id="r-narrow")
    result = await asyncio.to_thread(
        run_cli, "runs", "list", "--url", redis_url, "--prefix", db.keys.prefix
    )
    assert result.returncode == 0, result.stderr
    starts = {display_width(line[: line.index("active")]) for line in result.stdout.splitlines()}
    assert len(starts) == 1, result.stdout  # the status column starts at one column


def test_migrations_new_refuses_the_librarys_own_folder(tmp_path: Path) -> None:
    before = sorted(p.name for p in (ROOT / "migrations").iterdir())
    refused = run_cli("migrations", "new", "add_thing", cwd=ROOT)  # ./migrations is ours
    assert refused.returncode == 2
    assert "own migrations folder" in one_error_line(refused.stderr)
    # A checkout's own folder, beside an installed copy of the package: refused too.
    checkout = tmp_path / "checkout"
    (checkout / "flue_models").mkdir(parents=True)
    (checkout / "flue_models" / "__init__.py").write_text("")
    (checkout / "pyproject.toml").write_text('[project]\nname = "flue-models"\n')
    other = run_cli("migrations", "new", "add_thing", "--dir", str(checkout / "migrations"))
    assert other.returncode == 2
    assert "a flue-models source checkout" in one_error_line(other.stderr)
    assert not (checkout / "migrations").exists()
    assert sorted(p.name for p in (ROOT / "migrations").iterdir()) == before
    env = dict(os.environ, FLUE_MIGRATIONS_DIR=str(tmp_path / "app"))
    created = run_cli("migrations", "new", "add_thing", cwd=ROOT, env=env)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "app" / "0001_add_thing.py").is_file()


def test_progress_shows_on_a_terminal_only(redis_url: str, key_prefix: str) -> None:
    args = [sys.executable, "-m", "flue_models.cli", "migrate", "--url", redis_url]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    plain = subprocess.run(
        [*args, "--prefix", key_prefix], capture_output=True, text=True, env=env, timeout=120
    )
    assert plain.returncode == 0, plain.stderr
    assert "applying" not in plain.stderr  # not a terminal: no progress line
    assert "\r" not in plain.stderr

    controller, terminal = pty.openpty()
    try:
        shown = subprocess.run(
            [*args, "--prefix", f"{key_prefix}-tty"],
            stdout=subprocess.PIPE, stderr=terminal, env=env, timeout=120,
        )  # fmt: skip
        os.close(terminal)
        terminal = -1
        seen = b""
        while chunk := _read_available(controller):
            seen += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert shown.returncode == 0
    assert f"applying flue/{fm.schema.LAYOUT_VERSION:04d}_layout".encode() in seen


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # the terminal's other end is closed: all was read
        return b""


async def test_the_demo_cut_short_by_a_closed_pipe_leaves_no_run_active(
    redis_url: str, key_prefix: str
) -> None:
    command = f"{sys.executable} -m flue_models.cli demo --url {redis_url} --prefix {key_prefix}"
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-o", "pipefail", "-c", f"{command} | head -2"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert result.returncode == 141, result.stderr  # the demo's status: its pipe closed
    assert len(result.stdout.splitlines()) == 2
    assert "error" not in result.stderr
    assert "Traceback" not in result.stderr
    async with fm.connect(redis_url, key_prefix=key_prefix) as db:
        started = await WorkflowRun.find().using(db).all()
        assert started  # it did start runs...
        assert not [r.id for r in started if r.status == "active"]  # ...and ended them all
        for run in started:
            await run.delete()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0])
async def test_ctrl_c_stops_a_tail_at_any_moment(
    db: fm.Database, redis_url: str, delay: float
) -> None:
    stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/open")
    await stream.create()
    async with child_process(
        sys.executable, "-X", "importtime", "-m", "flue_models.cli", "events", "tail",
        "runs/open", "--url", redis_url, "--prefix", db.keys.prefix,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    ) as child:  # fmt: skip
        # The clock starts at the CLI's first line: -X importtime reports each import as
        # it ends, and the CLI's handler is in place before its first import of a file.
        # (Before that line the interpreter is starting, and a Ctrl-C there is Python's:
        # it kills or interrupts the process, or, when the process was started with
        # SIGINT ignored, as a script's background job is, is lost with nothing of ours
        # running to catch it.)
        assert child.stderr is not None
        seen = b""
        while not seen.rstrip().endswith(b" flue_models.cli.output"):
            line = await within(child.stderr.readline(), "the CLI's first imports")
            assert line, seen.decode()[-2000:]
            seen += line
        await asyncio.sleep(delay)  # a moment of the CLI's start-up or of its tail
        child.send_signal(signal.SIGINT)
        _out, err = await within(child.communicate(), "the CLI to stop on the first Ctrl-C")
    text = "\n".join(
        line for line in err.decode().splitlines() if not line.startswith("import time:")
    )
    if "Traceback" in text:
        # Only Python's own start-up (site, the editable install's finder, the package's
        # two-line __init__) may print one: from the CLI module's first line on, a Ctrl-C
        # anywhere, imports included, ends the command quietly.
        assert not re.search(r"flue_models/(?!__init__\.py)", text), text
        assert child.returncode != 0
    else:
        assert child.returncode in (130, -signal.SIGINT), text


async def test_the_server_stopping_under_a_tail_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FLUE_REDIS_SERVER")}
    env |= {"FLUE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    db = await fm.connect(data_dir=tmp_path / "data", key_prefix="tail")
    try:
        stream: fm.EventStream[dict[str, int]] = fm.EventStream("runs/live", db=db)
        await stream.create()
        await stream.append({"n": 1})
        async with child_process(
            sys.executable, "-m", "flue_models.cli", "events", "tail", "runs/live",
            "--prefix", "tail", "--outage", "1", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        ) as child:  # fmt: skip
            assert child.stdout is not None
            await within(child.stdout.readline(), "the tail's first event")
            stop = await asyncio.to_thread(run_cli, "server", "stop", env=env)
            assert stop.returncode == 0, stop.stderr
            _out, err = await within(child.communicate(), "the tail to end")
        assert child.returncode == 1
        assert "connection" in one_error_line(err.decode()).lower()
    finally:
        await db.close()


def test_a_ctrl_c_swallowed_during_the_imports_still_stops_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ctrl-C that lands in a finalizer while the CLI imports is only printed as
    "Exception ignored" by Python; the start-up handler remembered it, so the command
    stops before doing anything (it used to go on, and tail forever)."""
    monkeypatch.setattr(cli, "_SIGINT_AT_START_UP", [True])
    monkeypatch.setattr(cli, "_run", lambda *_a: pytest.fail("the command ran"))
    assert cli.main(["check", "--url", "redis://127.0.0.1:1/0"]) == 130
