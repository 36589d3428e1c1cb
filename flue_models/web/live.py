"""Live tails as server-sent events: the dashboard's one streaming response.

Example:
    ```python
    return EventSourceResponse(EventStream("runs/r-1", db=db), after="-1")
    ```
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flue_models.errors import FlueModelsError
from flue_models.state.events import EventStream, event_json
from flue_models.web.answers import HttpError, error_body, error_json

#: Live tails one dashboard keeps open at once (the connection pool holds 50 by default;
#: each open tail holds one): a tail beyond it is refused with 503 ``TooManyTails``.
MAX_TAILS = 32
#: Seconds a live tail rides out a server that went away (then ``event: failed``).
TAIL_OUTAGE_SECONDS = 60.0
#: A comment line is sent on a quiet live tail this often, so proxies keep it open and a
#: client that left is noticed.
KEEPALIVE_SECONDS = 15.0


class EventSourceResponse(Response):
    """A stream's events as ``text/event-stream``, until the stream closes or the client
    leaves; ``Last-Event-ID`` (a browser's reconnect) resumes after the last offset seen.

    Frames: ``id: <offset>`` + ``data: <event JSON>`` per event; ``event: closed`` when
    the stream closes; ``event: failed`` with the error's JSON if the tail fails; a
    comment every 15 s on a quiet stream. When ``stopping`` is set (the server shuts
    down), the response ends at once.

    Example:
        ```python
        return EventSourceResponse(EventStream("runs/r-1", db=db), after="-1")
        ```
    """

    def __init__(
        self,
        stream: EventStream[dict[str, Any]],
        after: str,
        stopping: asyncio.Event | None = None,
        slots: TailSlots | None = None,
    ) -> None:
        # No Response.__init__: it would send content-length: 0, ending the response.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        self.stream, self.after = stream, after
        self.stopping = stopping or asyncio.Event()
        self.slots = slots or TailSlots(MAX_TAILS)

    async def _frames(self) -> AsyncIterator[str]:
        """The frames to send, in order; keep-alive comments are added by the sender."""
        try:
            async for event in self.stream.tail(after=self.after, outage=TAIL_OUTAGE_SECONDS):
                yield f"id: {event.offset}\ndata: {event_json(event)}\n\n"
        except FlueModelsError as exc:
            yield _failed(exc)
            return
        yield "event: closed\ndata: {}\n\n"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.slots.used >= self.slots.size:
            refusal = HttpError(503, "TooManyTails", f"{self.slots.size} live tails are open")
            await error_json(refusal)(scope, receive, send)
            return
        self.slots.used += 1
        try:
            await self._stream(receive, send)
        finally:
            self.slots.used -= 1

    async def _stream(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)

        async def produce() -> None:
            try:
                async for frame in self._frames():
                    await queue.put(frame)
            except Exception as exc:  # a bug: the client is told, the server logs it
                await queue.put(_failed(exc))
                raise
            finally:
                await queue.put(None)

        async def pump() -> None:
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    frame = ": keep-alive\n\n"
                if frame is None:
                    await send({"type": "http.response.body", "body": b""})
                    return
                await send(
                    {"type": "http.response.body", "body": frame.encode(), "more_body": True}
                )

        async def left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.create_task(c) for c in (produce(), pump(), left(), self.stopping.wait())]
        try:
            await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        ended, gone = (t.done() and not t.cancelled() for t in tasks[1:3])
        if not ended and not gone:  # the server is stopping: end the response cleanly
            await send({"type": "http.response.body", "body": b""})
        # A send that fails is a client gone; a tail that fails unexpectedly is a bug,
        # raised for the ASGI server to log (the client got an 'event: failed').
        if isinstance(outcomes[0], Exception):
            raise outcomes[0]


class TailSlots:
    """How many live tails may be open at once, and how many are: each open tail holds
    one of the connection pool's connections (in its blocking read), so a cap keeps
    connections for the pages.

    Example:
        >>> slots = TailSlots(32)
        >>> slots.used, slots.size
        (0, 32)
    """

    def __init__(self, size: int) -> None:
        self.size, self.used = size, 0


def _failed(exc: Exception) -> str:
    return f"event: failed\ndata: {json.dumps(error_body(exc))}\n\n"
