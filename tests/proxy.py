"""A TCP proxy in front of a test server that can lose replies: the command reaches the
server and runs, its reply never reaches the client (what a dropped connection does)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ReplyDropper:
    """Forwards bytes both ways; :meth:`drop_next_reply` loses the next server reply."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.dropped = 0
        #: Bytes the server sent the client (replies), counted as they pass.
        self.received = 0
        self._armed = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def retarget(self, port: int) -> None:
        """Send new connections to ``port`` and cut the current ones."""
        self.target_port = port
        self.close_all()

    def drop_next_reply(self, count: int = 1) -> None:
        """Lose the next ``count`` server replies, closing the connection each time."""
        self._armed += count

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        replies: bool,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self._armed:
                    self._armed -= 1
                    self.dropped += 1
                    break  # the server answered; the client never hears it
                if replies:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for end in pair:  # this connection only
                end.close()
                self._writers.discard(end)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_w, server_w}
        ends = (client_w, server_w)
        pipes = [
            asyncio.create_task(self._pipe(client_r, server_w, False, ends)),
            asyncio.create_task(self._pipe(server_r, client_w, True, ends)),
        ]
        self._tasks.update(pipes)
        for task in pipes:
            task.add_done_callback(self._tasks.discard)

    def close_all(self) -> None:
        """Close every proxied connection (both sides)."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ReplyDropper]:
        listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = listener.sockets[0].getsockname()[1]
        try:
            async with listener:
                yield self
        finally:
            self.close_all()
            for task in list(self._tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
