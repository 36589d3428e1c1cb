"""The web dashboard (``flue-models serve``, the ``web`` extra): runs, sessions,
submissions, streams and the server, as pages and as a JSON API, read-only by default.

Example:
    ```console
    $ pip install 'flue-models[web]'
    $ flue-models serve --port 8000
    serving http://127.0.0.1:8000 (read-only; Ctrl-C stops)
    ```
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from types import FrameType
from typing import Literal

import uvicorn

from flue_models.errors import ConfigurationError
from flue_models.startup import connect
from flue_models.web.app import create_app
from flue_models.web.security import LOOPBACK_HOSTS, Auth, Csrf, Guard, is_loopback

__all__ = ["Auth", "Csrf", "Guard", "create_app", "serve"]

#: Seconds open live tails get to end when the server stops.
SHUTDOWN_SECONDS = 2


def _auth(host: str, kind: Literal["token", "basic"] | None) -> Auth | None:
    """The credentials ``serve`` requires; a non-loopback bind without them is refused."""
    if kind is None:
        if not is_loopback(host):
            raise ConfigurationError(
                f"serving on {host!r} (not loopback) needs --auth token or --auth basic, "
                "with the secret in $FLUE_WEB_SECRET"
            )
        return None
    return Auth.from_environment(kind)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> int:
    """Run ``flue-models serve``: check the options, connect, listen, serve until Ctrl-C.

    Everything that can be refused (a non-loopback host without ``--auth``, a missing
    secret, a port in use) is refused before the first request is answered.

    Example:
        ```console
        $ FLUE_WEB_SECRET=admin:s3cret flue-models serve --host 0.0.0.0 --auth basic
        ```
    """
    auth = _auth(args.host, args.auth)
    sock = _bind(args.host, args.port)  # a port in use is refused before connecting
    with sock:
        async with connect(
            args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect
        ) as db:
            stopping = asyncio.Event()
            app = Guard(
                create_app(db, allow_actions=args.allow_actions, stopping=stopping),
                auth=auth,
                hosts=LOOPBACK_HOSTS if auth is None else None,
            )
            config = uvicorn.Config(
                app,
                lifespan="off",
                log_level="warning",
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=SHUTDOWN_SECONDS,
            )
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            mode = "actions allowed" if args.allow_actions else "read-only"
            print(f"serving http://{shown}:{port} ({mode}; Ctrl-C stops)", flush=True)
            server = _Server(config, stopping, asyncio.get_running_loop())
            await _serve_until_stopped(server, sock, stopping)
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, ending the open live tails when a signal (SIGTERM) stops it."""

    def __init__(
        self, config: uvicorn.Config, stopping: asyncio.Event, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(config)
        self.stopping, self.loop = stopping, loop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        super().handle_exit(sig, frame)


async def _serve_until_stopped(
    server: uvicorn.Server, sock: socket.socket, stopping: asyncio.Event
) -> None:
    """Serve; when cancelled (Ctrl-C), shut down as uvicorn does on its own signal: stop
    accepting, end the open live tails (``stopping``), give other responses
    ``SHUTDOWN_SECONDS``, then cancel them. Repeated cancels while it does are absorbed:
    the shutdown is bounded."""
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        stopping.set()
        server.should_exit = True
        while not serving.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(serving)
        raise
