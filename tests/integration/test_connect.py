"""connect(): URL resolution, both usage forms, idempotent close, redaction, TLS and unix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis.asyncio.connection import AbstractConnection

import flue_models as fm
from flue_models.client import TimedSend
from flue_models.connection import current_database
from flue_models.embedded import find_binary, free_port
from tests.conftest import RedisServers
from tests.not_redis import not_redis_port


async def test_async_with_binds_the_database_and_closes_it(redis_url: str, protocol: int) -> None:
    async with fm.connect(redis_url, key_prefix="t", protocol=protocol) as db:
        assert current_database() is db
        assert await db.client.ping()
        assert db.report is not None
        assert db.report.maxmemory_policy == "noeviction"
    assert db.closed
    with pytest.raises(fm.ConfigurationError, match="connect"):
        current_database()


async def test_awaited_connect_and_close_is_idempotent(redis_url: str, protocol: int) -> None:
    db = await fm.connect(redis_url, protocol=protocol)
    assert await db.client.ping()
    await db.close()
    await db.close()
    assert db.closed


async def test_resp3_is_spoken_when_asked(redis_url: str) -> None:
    async with fm.connect(redis_url, protocol=3) as db:
        info = await db.client.execute_command("CLIENT", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        assert "resp=3" in text


async def test_redis_url_from_the_environment_is_used(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, key_prefix: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    async with fm.connect(key_prefix=key_prefix) as db:
        assert db.url.url == redis_url
        assert db.embedded is None


async def test_argument_wins_over_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    async with fm.connect(redis_url) as db:
        assert db.url.url == redis_url


async def test_malformed_url_is_refused_before_connecting() -> None:
    with pytest.raises(fm.errors.InvalidURLError, match="unsupported scheme 'http'"):
        await fm.connect("http://:pw@localhost:6379")


async def test_password_never_appears_in_errors_or_repr(redis_servers: RedisServers) -> None:
    server = redis_servers.start("--requirepass", "Sup3rS3cret")
    url = f"redis://:Sup3rS3cret@127.0.0.1:{server.port}/0"
    async with fm.connect(url) as db:
        assert "Sup3rS3cret" not in repr(db)
        assert "Sup3rS3cret" not in repr(db.url)
        assert "***" in repr(db)
    server.stop()
    with pytest.raises(fm.ConnectionFailedError) as caught:
        await fm.connect(url)
    assert "Sup3rS3cret" not in str(caught.value)
    assert ":***@" in str(caught.value)


async def test_unreachable_server_gives_a_clear_error() -> None:
    with pytest.raises(fm.ConnectionFailedError, match="Could not connect to the Redis server"):
        await fm.connect("redis://127.0.0.1:1/0")


async def test_unix_socket_url(redis_servers: RedisServers, tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    redis_servers.start("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    async with fm.connect(f"unix://{socket_path}") as db:
        assert db.url.scheme == "unix"
        assert await db.client.ping()


def _make_certificates(directory: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "2", "-subj", "/CN=flue-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=localhost")  # fmt: skip
    (directory / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext")  # fmt: skip


def _tls_missing() -> str | None:
    """Why the TLS test cannot run here, or ``None`` when it can."""
    if shutil.which("openssl") is None:
        return "needs the openssl command to make certificates"
    try:
        binary = find_binary()
    except fm.ConfigurationError as exc:
        return f"no test server binary: {exc}"
    if b"SSL_CTX_new" not in Path(binary).read_bytes():
        return f"the test server ({binary}) was built without TLS"
    return None


@pytest.mark.skipif(_tls_missing() is not None, reason=str(_tls_missing()))
async def test_rediss_url_speaks_tls(redis_servers: RedisServers, tmp_path: Path) -> None:
    _make_certificates(tmp_path)
    tls_port = free_port()
    redis_servers.start(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(tmp_path / "server.crt"),
        "--tls-key-file", str(tmp_path / "server.key"),
        "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    url = f"rediss://localhost:{tls_port}/0?ssl_ca_certs={tmp_path / 'ca.crt'}"
    async with fm.connect(url) as db:
        assert db.url.scheme == "rediss"
        info = await db.client.execute_command("CLIENT", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        assert f"laddr=127.0.0.1:{tls_port}" in text


async def test_refused_credentials_say_authentication_failed(redis_servers: RedisServers) -> None:
    server = redis_servers.start("--requirepass", "Sup3rS3cret")
    with pytest.raises(fm.AuthenticationFailedError, match="authentication failed") as wrong:
        await fm.connect(f"redis://:wrong-one@127.0.0.1:{server.port}/0")
    assert "wrong-one" not in str(wrong.value)
    assert "USER:PASSWORD" in str(wrong.value)  # says what to fix
    with pytest.raises(fm.AuthenticationFailedError, match="authentication failed"):
        await fm.connect(f"redis://127.0.0.1:{server.port}/0")  # none given


async def test_a_database_the_server_lacks_is_named(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    with pytest.raises(fm.ConnectionFailedError, match="refused database 99") as caught:
        await fm.connect(f"{base}/99")
    assert caught.value.__cause__ is not None  # the redis-py error, chained


async def test_a_port_that_is_not_redis_is_named() -> None:
    async with not_redis_port() as port:
        with pytest.raises(fm.ConnectionFailedError, match="not a Redis or Valkey server"):
            await fm.connect(f"redis://127.0.0.1:{port}/0")


async def test_tls_to_a_plain_port_says_the_handshake_failed(redis_url: str) -> None:
    # A plain server waits for a command its TLS hello is not: the handshake times out.
    # One second of it says the same as the default 30.
    with pytest.raises(fm.ConnectionFailedError, match="use redis:// for a plain port"):
        await fm.connect(redis_url.replace("redis://", "rediss://", 1), timeout=1)


@pytest.mark.parametrize("secret", ["QX/Z9/K", "QX@Z9@K", "QX:Z9:K", "QX%Z9%K", "QX Z9 K"])
async def test_hostile_passwords_connect_and_never_show(
    redis_url: str, key_prefix: str, secret: str
) -> None:
    admin = await fm.connect(redis_url, key_prefix=key_prefix, migrate=False, check_schema=False)
    user = f"u{key_prefix.replace(':', '')}"
    host = redis_url.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        await admin.client.acl_setuser(
            user, enabled=True, passwords=[f"+{secret}"], keys=["*"], commands=["+@all"]
        )
        encoded = f"redis://{user}:{quote(secret, safe='')}@{host}/0"
        async with fm.connect(encoded, key_prefix=key_prefix) as db:
            assert await db.client.ping()
            assert "Z9" not in repr(db)
        wrong = f"redis://{user}:{quote(secret[::-1], safe='')}@{host}/0"
        dead = f"redis://{user}:{quote(secret, safe='')}@127.0.0.1:1/0"
        for url in (wrong, f"redis://{user}:{secret[::-1]}@{host}/0", dead):
            with pytest.raises(fm.FlueModelsError) as caught:
                await fm.connect(url, key_prefix=key_prefix)
            assert "Z9" not in str(caught.value), str(caught.value)
            assert "9Z" not in str(caught.value), str(caught.value)
    finally:
        await admin.client.acl_deluser(user)
        keys = [k async for k in admin.client.scan_iter(match=admin.keys.pattern())]
        if keys:
            await admin.client.delete(*keys)
        await admin.close()


async def test_a_client_of_the_application_is_used_and_left_open(
    redis_url: str, key_prefix: str
) -> None:
    """connect(client=...): the library runs on the application's own redis-py client
    (its pool, its settings) and closing the database leaves that client working."""
    import redis.asyncio as aioredis

    from tests.integration.models import Ticket

    mine = aioredis.Redis.from_url(redis_url)
    try:
        async with fm.connect(client=mine, key_prefix=key_prefix) as db:
            assert db.client.connection_pool is mine.connection_pool  # type: ignore[union-attr]
            await Ticket(id="t-1", status="open", priority=1).save()
            assert (await Ticket.get("t-1")) is not None
            run = await fm.WorkflowRun.start("wf", input={})
            await run.finish(result={})  # a MULTI, on the application's connections
        assert await mine.ping()  # still open: the database did not close it
        assert await mine.exists(db.keys.record("it_ticket", "t-1")) == 1
        with pytest.raises(fm.ConfigurationError, match="not both"):
            await fm.connect(redis_url, client=mine, key_prefix=key_prefix)
        decoding = aioredis.Redis.from_url(redis_url, decode_responses=True)
        with pytest.raises(fm.ConfigurationError, match="decode_responses"):
            await fm.connect(client=decoding, key_prefix=key_prefix)
        await decoding.aclose()
        with pytest.raises(fm.ConfigurationError, match=r"redis\.asyncio"):
            await fm.connect(client=object(), key_prefix=key_prefix)
    finally:
        await mine.aclose()


#: What a connection sends when it opens (its handshake), whatever the library asks.
HANDSHAKE = {b"HELLO", b"CLIENT", b"SELECT", b"AUTH"}


def arguments(packed: bytes) -> list[bytes]:
    """Every argument of the commands in one write (RESP arrays of bulk strings)."""
    found, at = [], 0
    while at < len(packed):
        end = packed.index(b"\r\n", at)
        count, at = int(packed[at + 1 : end]), end + 2
        for _ in range(count):
            end = packed.index(b"\r\n", at)
            size, at = int(packed[at + 1 : end]), end + 2
            found.append(packed[at : at + size])
            at += size + 2
    return found


async def test_connect_to_an_up_to_date_store_asks_twice_after_the_handshake(
    redis_servers: RedisServers, protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29's connect() target: the inspection's questions (one pipeline, which also
    says whether the server is a Cluster node) and one read of the schema record (for
    the schema check and the bucket check alike). No health-check PING on the socket
    just opened, no INFO of its own for the cluster question, no second schema read."""
    server = redis_servers.start()
    async with fm.connect(server.url, key_prefix="rt", protocol=protocol):
        pass  # the first connect() migrates the empty store
    writes = record_writes(monkeypatch)
    async with fm.connect(server.url, key_prefix="rt", protocol=protocol) as db:
        assert db.report is not None
        assert db.report.maxmemory_policy == "noeviction"
        monkeypatch.undo()
    asked = [write for write in writes if write[0].upper() not in HANDSHAKE]
    assert [write[0] for write in asked] == [b"INFO", b"TYPE"], asked
    assert asked[0].count(b"INFO") == 5  # server, cluster, memory, persistence, replication
    assert asked[1] == [b"TYPE", b"rt::{meta}", b"HGETALL", b"rt::{meta}"]
    assert not any(b"PING" in write for write in writes)


async def test_connect_without_the_inspection_asks_only_whether_it_is_a_cluster(
    redis_servers: RedisServers, protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inspect_server=False`` (a managed service, an ACL that denies ``CONFIG``): none
    of the inspection's questions is sent, so none is refused and logged."""
    server = redis_servers.start()
    writes = record_writes(monkeypatch)
    options: dict[str, Any] = {"inspect_server": False, "migrate": False, "check_schema": False}
    async with fm.connect(server.url, key_prefix="rt", protocol=protocol, **options) as db:
        assert db.report is None
        monkeypatch.undo()
    asked = [write for write in writes if write[0].upper() not in HANDSHAKE]
    assert asked == [[b"INFO", b"cluster"]], asked


def record_writes(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """Record the arguments of every write on a connection from now on (until undone)."""
    writes: list[list[bytes]] = []
    # Every connection of the library's is a TimedSend, whose send_packed_command does
    # not call redis-py's; a connection of another class goes through redis-py's.
    for owner in (TimedSend, AbstractConnection):
        send = owner.send_packed_command

        async def counted(
            connection: AbstractConnection,
            command: Any,
            check_health: bool = True,
            *,
            send: Any = send,
        ) -> None:
            packed = command.encode() if isinstance(command, str) else command
            writes.append(arguments(packed if isinstance(packed, bytes) else b"".join(packed)))
            await send(connection, command, check_health)

        monkeypatch.setattr(owner, "send_packed_command", counted)
    return writes
