"""The dashboard's fixtures: an HTTP client on the ASGI app (httpx, in-process), and
helpers that drive the app the way a server does, for the streaming responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import flue_models as fm
from flue_models.web import Csrf, Guard, create_app
from flue_models.web.security import LOOPBACK_HOSTS, Auth

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def protocol() -> int:
    """The dashboard's tests run once, on RESP3 (the app does not depend on the protocol)."""
    return 3


def client_for(
    db: fm.Database,
    *,
    allow_actions: bool = False,
    auth: Auth | None = None,
    csrf: Csrf | None = None,
) -> httpx.AsyncClient:
    """An httpx client on the guarded app, as ``flue-models serve`` builds it."""
    app = Guard(
        create_app(db, allow_actions=allow_actions, csrf=csrf),
        auth=auth,
        hosts=LOOPBACK_HOSTS if auth is None else None,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def web(db: fm.Database) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a read-only dashboard."""
    async with client_for(db) as client:
        yield client


class AsgiCall:
    """One GET through the app's ASGI interface, with the client's side under the test's
    control: what was sent so far, and a hang-up."""

    def __init__(self, app: Any, path: str, query: str = "", headers: dict[str, str] | None = None):
        self.chunks: list[bytes] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.arrived = asyncio.Event()
        self.hang_up = asyncio.Event()
        raw = [(b"host", b"127.0.0.1:8000")] + [
            (k.lower().encode(), v.encode()) for k, v in (headers or {}).items()
        ]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "headers": raw, "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000), "root_path": "",
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        await self.hang_up.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))
        self.arrived.set()

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()

    async def until(self, needle: str, seconds: float = 30.0) -> None:
        """Wait (with a deadline) until the body so far holds ``needle``."""

        async def wait() -> None:
            while needle not in self.text:
                self.arrived.clear()
                if needle in self.text:
                    return
                await self.arrived.wait()

        try:
            await asyncio.wait_for(wait(), seconds)
        except TimeoutError:
            raise AssertionError(f"no {needle!r} after {seconds} s; got {self.text!r}") from None
