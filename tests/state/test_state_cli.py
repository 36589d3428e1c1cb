"""The runs, events and demo commands, run as a user would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path

import pytest

import flue_models as fm
from flue_models import WorkflowRun
from tests.command_line import run_cli
from tests.waiting import poll_until

ROOT = Path(__file__).parents[2]


@pytest.fixture
def protocol() -> int:
    """The command line speaks redis-py's default protocol: one run of each test is enough."""
    return 3


async def test_runs_list_show_and_events_read(db: fm.Database, redis_url: str) -> None:
    run = await WorkflowRun.start("日報", input={"team": "support"}, run_id="r-cli")
    await run.events.append({"type": "log", "message": "hello"})
    await run.fail(error={"message": "boom"})
    common = ["--url", redis_url, "--prefix", db.keys.prefix]

    listed = await asyncio.to_thread(run_cli, "runs", "list", *common, "--status", "errored")
    assert listed.returncode == 0, listed.stderr
    assert "r-cli" in listed.stdout
    assert "日報" in listed.stdout
    as_json = json.loads(
        (await asyncio.to_thread(run_cli, "runs", "list", *common, "--json")).stdout
    )
    assert as_json["items"][0]["id"] == "r-cli"
    assert as_json["next_cursor"] is None

    shown = await asyncio.to_thread(run_cli, "runs", "show", "r-cli", *common)
    assert json.loads(shown.stdout)["error"] == {"message": "boom"}
    missing = await asyncio.to_thread(run_cli, "runs", "show", "nope", *common)
    assert missing.returncode == 3

    read = await asyncio.to_thread(run_cli, "events", "read", "runs/r-cli", *common)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout.splitlines()[0])["data"]["message"] == "hello"
    assert "up_to_date=true closed=true" in read.stderr
    tailed = await asyncio.to_thread(run_cli, "events", "tail", "runs/r-cli", *common)
    assert tailed.returncode == 0  # the stream is closed, so the tail ends by itself
    assert len(tailed.stdout.splitlines()) == 1


def shape(line: str) -> str:
    """A line of the demo's output with what changes from run to run replaced: ids, times,
    durations, session key suffixes, column padding."""
    line = re.sub(r"[0-9a-f]{32}", "ID", line)
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "TIME", line)
    line = re.sub(r"/[0-9a-f]{8}\b", "/KEY", line)
    line = re.sub(r"\d+ ms", "N ms", line)
    return " ".join(line.split())


def test_the_demo_runs_twice_and_keeps_the_first_runs_data(redis_url: str, key_prefix: str) -> None:
    first = run_cli("demo", "--url", redis_url, "--prefix", key_prefix)
    assert first.returncode == 0, first.stderr
    # The quickstart's sample of it: each line it shows, in order, but the first (the
    # embedded server's address) and the "..." it leaves out.
    page = (ROOT / "docs" / "quickstart.md").read_text()
    sample = page.split("$ .venv/bin/flue-models demo\n", 1)[1].split("```", 1)[0]
    shown = [shape(line) for line in sample.splitlines()[1:] if line.strip() != "..."]
    printed = iter(shape(line) for line in first.stdout.splitlines())
    missing = [line for line in shown if not any(line == out for out in printed)]
    assert missing == [], f"the quickstart shows lines the demo does not print: {missing}"
    assert "0 run(s) from earlier demos" in first.stdout
    assert "live tail of run" in first.stdout
    assert "(stream closed: the run ended)" in first.stdout
    assert "completed: 3 run(s)" in first.stdout
    assert "errored: 1 run(s)" in first.stdout
    second = run_cli("demo", "--url", redis_url, "--prefix", key_prefix)
    assert second.returncode == 0, second.stderr
    assert "4 run(s) from earlier demos" in second.stdout
    assert "completed: 6 run(s)" in second.stdout


async def test_sessions_show(db: fm.Database, redis_url: str) -> None:
    session = await fm.Session.open("support/eu-1/claude/main", metadata={"user": "u1"})
    for n in range(5):
        await session.append(fm.MessageEntry(id=f"m{n}", role="user", content=f"hello {n}"))
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    shown = await asyncio.to_thread(
        run_cli, "sessions", "show", "support/eu-1/claude/main", *common, "--entries", "2"
    )
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["metadata"] == {"user": "u1"}
    assert body["leaf_id"] == "m4"
    assert [e["id"] for e in body["entries"]] == ["m3", "m4"]
    missing = await asyncio.to_thread(run_cli, "sessions", "show", "nope", *common)
    assert missing.returncode == 3


async def test_sessions_list(db: fm.Database, redis_url: str) -> None:
    first = await fm.Session.open(fm.session_key("support", "eu-1", "claude", "main"))
    await first.append(fm.MessageEntry(id="m1", role="user", content="hi"))
    await fm.Session.open(fm.session_key("sales", "eu-1", "claude", "main"))
    await fm.Session.fork(first.id, "m1", new_id=fm.session_key("support", "eu-1", "claude", "r"))
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    listed = await asyncio.to_thread(
        run_cli, "sessions", "list", "--agent", "support", "--limit", "1", *common
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    fields = lines[0].split()  # id, updated_at, count, "entries", "fork of <parent>"
    assert fields[0] == "support/eu-1/claude/r"
    assert fields[2:] == ["1", "entries", "fork", "of", first.id]
    assert lines[1].startswith("next: --cursor ")
    cursor = lines[1].removeprefix("next: --cursor ")
    rest = await asyncio.to_thread(
        run_cli, "sessions", "list", "--agent", "support", "--cursor", cursor, "--json", *common
    )
    body = json.loads(rest.stdout)
    assert [item["id"] for item in body["items"]] == [first.id]
    assert body["next_cursor"] is None


async def test_submissions_list(db: fm.Database, redis_url: str) -> None:
    await fm.Submission.admit_direct("p-1", session_id="s-1", input={})
    await fm.Submission.admit_dispatch("d-2", session_id="s-2", input={})
    attempt = await fm.Submission.claim("d-2", "worker-a")
    assert attempt is not None
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    listed = await asyncio.to_thread(run_cli, "submissions", "list", *common)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["p-1", "d-2"]
    running = await asyncio.to_thread(
        run_cli, "submissions", "list", *common, "--status", "running"
    )
    assert "d-2" in running.stdout
    assert "owner=worker-a" in running.stdout
    assert "p-1" not in running.stdout


async def test_runs_cancel(db: fm.Database, redis_url: str) -> None:
    run = await WorkflowRun.start("long", run_id="r-cancel")
    common = ["--url", redis_url, "--prefix", db.keys.prefix]
    first = await asyncio.to_thread(run_cli, "runs", "cancel", "r-cancel", *common)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "run r-cancel: cancelled\n"
    again = await asyncio.to_thread(run_cli, "runs", "cancel", "r-cancel", *common, "--json")
    assert json.loads(again.stdout) == {"run_id": "r-cancel", "outcome": "already_ended"}
    assert (await WorkflowRun.lookup(run.id)).status == "cancelled"  # type: ignore[union-attr]
    missing = await asyncio.to_thread(run_cli, "runs", "cancel", "nope", *common)
    assert missing.returncode == 3
    assert missing.stderr == "error: no run 'nope'\n"


async def test_submissions_requeue(db: fm.Database, redis_url: str) -> None:
    await fm.Submission.admit_direct("p-1", session_id="s-1", input={})
    await fm.Submission.admit_direct("p-2", session_id="s-2", input={})
    assert await fm.Submission.claim("p-1", owner_id="w", lease=dt.timedelta(milliseconds=1))
    assert await fm.Submission.claim("p-2", owner_id="w")  # a 30 s lease: not expired
    common = ["--url", redis_url, "--prefix", db.keys.prefix]

    async def expired() -> bool:
        return bool(await fm.Submission.list_expired())

    await poll_until(expired, "the 1 ms lease to expire by the server clock", seconds=10)
    done = await asyncio.to_thread(run_cli, "submissions", "requeue", "p-1", *common)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "submission p-1: requeued\n"
    refused = await asyncio.to_thread(run_cli, "submissions", "requeue", "p-2", *common)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: submission 'p-2' was not requeued")
    assert len(refused.stderr.splitlines()) == 1
    row = await fm.Submission.get("p-2")
    assert row is not None
    assert row.status == "running"
    missing = await asyncio.to_thread(run_cli, "submissions", "requeue", "nope", *common)
    assert missing.returncode == 3
