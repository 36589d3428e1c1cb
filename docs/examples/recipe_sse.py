"""Recipe: a run's events, live, in a browser: server-sent events from a small ASGI app.

Serve ``app`` with any ASGI server (``uvicorn recipe_sse:app``) and open
``new EventSource("/runs/<id>/events")`` in the page. Here the app is driven in-process,
the way ASGI test clients do, while the run appends events and ends.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from example_support import delete_prefix

import flue_models as fm
from flue_models import WorkflowRun

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# --8<-- [start:app]
async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """GET /runs/<id>/events: the run's events as they are appended, until it ends."""
    run_id = scope["path"].removeprefix("/runs/").removesuffix("/events")
    run = await WorkflowRun.get(run_id)
    if scope["type"] != "http" or run is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no such run"})
        return
    # A browser that reconnects sends the last id it saw: resume after it.
    headers = dict(scope.get("headers", []))
    after = headers.get(b"last-event-id", b"-1").decode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")],
        }
    )

    async def stream() -> None:
        async for event in run.events.tail(after=after):  # ends when the run's stream closes
            data = json.dumps(event.data)  # JSON has no raw newline: one data line
            chunk = f"id: {event.offset}\ndata: {data}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"event: end\ndata: {}\n\n"})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    streaming, leaving = asyncio.create_task(stream()), asyncio.create_task(disconnected())
    await asyncio.wait([streaming, leaving], return_when=asyncio.FIRST_COMPLETED)
    for task in (streaming, leaving):
        task.cancel()  # the client left, or the run ended


# --8<-- [end:app]


async def main() -> None:
    async with fm.connect(key_prefix="recipe-sse") as db:
        try:
            run = await WorkflowRun.start("summarize", input={"doc": "d-1"})
            sent: list[bytes] = []
            first_chunk = asyncio.Event()
            hang_up = asyncio.Event()

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body":
                    sent.append(message["body"])
                    first_chunk.set()

            async def receive() -> dict[str, Any]:
                await hang_up.wait()
                return {"type": "http.disconnect"}

            scope = {"type": "http", "path": f"/runs/{run.id}/events", "headers": []}
            serving = asyncio.create_task(app(scope, receive, send))
            await run.events.append({"type": "log", "message": "<b>step 1</b>"})
            await asyncio.wait_for(first_chunk.wait(), timeout=10)  # the page shows it live
            await run.events.append({"type": "log", "message": "step 2"})
            await run.finish({"summary": "done"})  # closes the stream: the response ends
            await asyncio.wait_for(serving, timeout=10)
            body = b"".join(sent).decode()
            print(body, end="")
            assert body.count("data: ") == 3
            assert body.endswith("event: end\ndata: {}\n\n")
        finally:
            await delete_prefix(db)


if __name__ == "__main__":
    asyncio.run(main())
