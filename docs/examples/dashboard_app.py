"""The dashboard inside your own process: ``create_app`` on a connected database, behind
the same guards as ``flue-models serve``, served by any ASGI server. Here httpx calls it
in-process, the way the dashboard's own tests do."""

import asyncio

import httpx
from example_support import delete_prefix

import flue_models as fm
from flue_models.web import Guard, create_app
from flue_models.web.security import LOOPBACK_HOSTS


async def main() -> None:
    async with fm.connect(key_prefix="example-dashboard") as db:
        try:
            await fm.WorkflowRun.start("summarize", input={"doc": "d-1"})
            # --8<-- [start:app]
            app = Guard(create_app(db, allow_actions=False), auth=None, hosts=LOOPBACK_HOSTS)
            # uvicorn.Server(uvicorn.Config(app)).serve(), or any ASGI server
            # --8<-- [end:app]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
                page = (await web.get("/api/runs?status=active")).json()
            print(f"{len(page['items'])} active run(s): {page['items'][0]['workflow']}")
            assert page["counts"]["active"] == 1
        finally:
            await delete_prefix(db)


if __name__ == "__main__":
    asyncio.run(main())
