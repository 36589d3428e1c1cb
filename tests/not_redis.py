"""A port that answers, but not as Redis: an HTTP-like listener on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def not_redis_port() -> AsyncIterator[int]:
    """Yield the port of a listener that answers every request with an HTML line."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"<html>not redis</html>\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(http, "127.0.0.1", 0)
    async with listener:
        yield listener.sockets[0].getsockname()[1]
