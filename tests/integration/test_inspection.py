"""Start-up inspection against real servers: Cluster, eviction, ACL-restricted users."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

import flue_models as fm
from flue_models.embedded import ServerIdentity, find_binary
from flue_models.inspection import inspect_server, read_ahead, read_server
from tests.command_line import run_cli
from tests.conftest import RedisServers


async def test_a_well_configured_server_passes(redis_url: str, protocol: int) -> None:
    async with fm.connect(redis_url, protocol=protocol) as db:
        report = db.report
    assert report is not None
    assert report.cluster_enabled is False
    assert report.maxmemory_policy == "noeviction"
    assert report.version is not None


async def test_the_inspection_reads_info_as_the_server_sent_it(
    redis_servers: RedisServers, protocol: int
) -> None:
    """The read-ahead takes INFO's text as sent (redis-py's callback would parse it into a
    dict line by line, and the inspection parse it again: most of a connect()'s time),
    and reads the same report from it as from redis-py's parsed replies."""
    server = redis_servers.start()
    async with fm.connect(server.url, key_prefix="raw", protocol=protocol) as db:
        ahead = await read_ahead(db.client)
        assert all(isinstance(ahead.replies[("INFO", s)], bytes) for s in ("server", "memory"))
        assert isinstance(await db.client.info("server"), dict)  # the client's own API: parsed
        plain = aioredis.Redis(port=server.port, protocol=protocol)
        try:
            parsed = await read_server(plain)  # through redis-py's pipeline and callbacks
        finally:
            await plain.aclose()
    report = db.report  # what connect() read from its own read-ahead
    assert report is not None
    same = ("version", "flavor", "cluster_enabled", "maxmemory_policy", "aof_enabled")
    same += ("rdb_enabled", "replicas")
    assert {f: getattr(report, f) for f in same} == {f: getattr(parsed, f) for f in same}


async def test_the_suite_runs_on_the_server_it_was_given(redis_servers: RedisServers) -> None:
    """The test servers are the binary find_binary() picks: the embedded Valkey by
    default, Redis when .ci/run sets FLUE_REDIS_SERVER. Proves which one CI exercised."""
    server = redis_servers.start()
    async with fm.connect(server.url) as db:
        report = db.report
    assert report is not None
    expected = ServerIdentity.of_binary(find_binary())
    assert (report.flavor, report.version) == (expected.family, expected.version)
    print(f"test server: {expected.label}")


async def test_a_cluster_that_serves_no_slot_is_refused_as_not_ready(
    redis_servers: RedisServers, protocol: int
) -> None:
    server = redis_servers.start_cluster_node()  # Cluster mode, no slot assigned
    with pytest.raises(fm.ServerCheckError, match="CLUSTER INFO"):
        await fm.connect(server.url, protocol=protocol)


async def test_a_cluster_node_read_through_a_client_of_one_server_is_refused(
    redis_servers: RedisServers,
) -> None:
    server = redis_servers.start_cluster_node()
    client = aioredis.Redis.from_url(server.url)
    try:
        with pytest.raises(fm.ServerCheckError, match=r"connect\(\)"):
            await inspect_server(client)
    finally:
        await client.aclose()


async def test_every_primary_of_a_cluster_is_checked(redis_servers: RedisServers) -> None:
    nodes = redis_servers.start_cluster()
    async with fm.connect(nodes[0].url, key_prefix="checked") as db:
        assert db.report is not None
        assert len(db.report.primaries) == 3
        lines = db.report.lines()
        assert "cluster: on, 3 primaries, 0 replicas" in lines
        for node in nodes:  # each primary, by name, with its own settings
            line = next(x for x in lines if x.startswith(f"primary 127.0.0.1:{node.port}: "))
            assert "maxmemory-policy noeviction, persistence AOF, memory " in line
        assert lines.count("  replicas: none") == 3
    nodes[2].sync_client().config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(fm.ServerCheckError, match="allkeys-lru") as refused:
        await fm.connect(nodes[0].url, key_prefix="checked")
    assert str(refused.value).startswith(f"primary 127.0.0.1:{nodes[2].port}: ")
    for node in nodes:
        node.kill()


async def test_check_on_a_cluster_shows_each_primary_and_its_replicas(
    redis_servers: RedisServers,
) -> None:
    """flue-models check on a cluster with replicas: a line per primary, its replicas and
    their lag; a primary that keeps nothing on disk is named in the warning."""
    nodes = redis_servers.start_cluster(replicas=1)
    primaries, replicas = nodes[:3], nodes[3:]
    primaries[1].sync_client().config_set("appendonly", "no")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flue_models.cli", "check", "--url", primaries[0].url, "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    for node in nodes:
        node.kill()
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["checks"] == "passed"
    assert {p["node"] for p in shown["primaries"]} == {f"127.0.0.1:{n.port}" for n in primaries}
    following = {r["address"] for p in shown["primaries"] for r in p["replicas"]}
    assert following == {f"127.0.0.1:{n.port}" for n in replicas}
    assert all(r["state"] == "online" for p in shown["primaries"] for r in p["replicas"])
    (warning,) = shown["warnings"]
    assert f"on 127.0.0.1:{primaries[1].port}" in warning


async def test_an_evicting_policy_is_refused_by_name(
    redis_servers: RedisServers, protocol: int
) -> None:
    server = redis_servers.start()
    server.sync_client().config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(fm.ServerCheckError, match="allkeys-lru") as caught:
        await fm.connect(server.url, protocol=protocol)
    assert "noeviction" in str(caught.value)


async def test_inspection_can_be_skipped(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    server.sync_client().config_set("maxmemory-policy", "allkeys-lru")
    async with fm.connect(server.url, inspect_server=False) as db:
        assert db.report is None
        assert await db.client.ping()


async def test_no_persistence_warns_without_failing(redis_servers: RedisServers) -> None:
    server = redis_servers.start("--appendonly", "no", "--save", "")
    with pytest.warns(fm.PersistenceWarning, match="nothing on disk"):
        db = await fm.connect(server.url)
    await db.close()


MakeUser = Callable[..., Awaitable[str]]


@pytest.fixture
async def acl_user(redis_url: str) -> AsyncIterator[MakeUser]:
    """Make ACL users on the shared server; remove them afterwards."""
    admin = aioredis.Redis.from_url(redis_url)
    made: list[str] = []

    async def make(*rules: str) -> str:
        name = f"flue-test-{uuid.uuid4().hex[:8]}"
        acl = ("on", ">pw", "~*", "&*", "+@all", *rules)
        await admin.execute_command("ACL", "SETUSER", name, *acl)
        made.append(name)
        host_part = redis_url.split("://", 1)[1].rsplit("@", 1)[-1]
        return f"redis://{name}:pw@{host_part}"

    yield make
    for name in made:
        await admin.execute_command("ACL", "DELUSER", name)
    await admin.aclose()


async def test_info_fallback_when_config_is_denied(acl_user: MakeUser, protocol: int) -> None:
    url = await acl_user("-config")
    async with fm.connect(url, protocol=protocol) as db:
        with pytest.raises(fm.errors.CommandError) as denied:
            await db.client.config_get("maxmemory-policy")
        assert isinstance(denied.value.__cause__, NoPermissionError)
        assert db.report is not None
        assert db.report.maxmemory_policy == "noeviction"
        assert db.report.cluster_enabled is False


async def test_denied_config_and_info_fail_with_the_clear_error(
    acl_user: MakeUser, protocol: int
) -> None:
    url = await acl_user("-config", "-info")
    with pytest.raises(fm.ServerCheckError) as caught:
        await fm.connect(url, protocol=protocol)
    message = str(caught.value)
    assert "CONFIG GET and INFO were denied" in message
    assert "inspect_server=False" in message
    assert ":pw@" not in message


def test_cli_check_prints_the_server_settings(redis_url: str) -> None:
    result = run_cli("check", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert "maxmemory-policy: noeviction" in result.stdout
    assert "cluster: off" in result.stdout
    assert "\npersistence: " in result.stdout


def test_cli_check_fails_on_an_evicting_server_and_says_noeviction(
    redis_servers: RedisServers,
) -> None:
    server = redis_servers.start()
    server.sync_client().config_set("maxmemory-policy", "allkeys-lru")
    result = run_cli("check", "--url", server.url)
    assert result.returncode != 0
    assert "noeviction" in result.stderr
    assert "allkeys-lru" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in (
        "demo", "check", "migrate", "migrations", "runs", "sessions", "submissions",
        "events", "serve", "server",
    ):  # fmt: skip
        assert f"    {command}" in result.stdout


def test_cli_output_cut_short_by_a_closed_pipe_is_not_a_traceback(redis_url: str) -> None:
    command = f"{sys.executable} -m flue_models.cli check --url {redis_url} | head -1"
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.startswith("url: ")
    assert "Traceback" not in result.stderr
