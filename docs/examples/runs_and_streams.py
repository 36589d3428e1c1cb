"""Start a workflow run, stream its events, end it, list runs and tail its events."""

import asyncio

import flue_models as fm
from flue_models import WorkflowRun


async def main() -> None:
    async with fm.connect(key_prefix="runs-example"):
        run = await WorkflowRun.start("summarize", input={"text": "..."})
        await run.events.append({"type": "log", "message": "started"})
        await run.events.append_once("step-1", {"type": "progress", "step": 1})
        await run.events.append_once("step-1", {"type": "progress", "step": 1})  # a retry
        await run.finish(result={"summary": "..."})

        page = await WorkflowRun.list(status="completed", workflow="summarize", limit=20)
        for pointer in page.items:
            print(pointer.id, pointer.status, pointer.duration_ms, "ms")

        # --8<-- [start:tail]
        async for event in run.events.tail(after="-1"):  # ends: the run closed its stream
            print(event.offset, event.data)
        # --8<-- [end:tail]

        failed = await WorkflowRun.start("summarize", input={"text": "???"})
        print(await failed.fail(error={"message": "unreadable input"}))  # EndResult.ENDED
        print(await WorkflowRun.finish_id(failed.id))  # EndResult.ALREADY_ENDED


if __name__ == "__main__":
    asyncio.run(main())
