"""Recipe: the data behind a runs dashboard: filters, keyset cursors, counts per status."""

import asyncio
import typing
from typing import Any

from example_support import delete_prefix

import flue_models as fm
from flue_models import WorkflowRun
from flue_models.state.run import RunStatus


# --8<-- [start:handler]
async def runs_page(
    status: RunStatus | None = None,
    workflow: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """What a GET /runs?status=&workflow=&cursor= handler returns as JSON."""
    page = await WorkflowRun.list(status=status, workflow=workflow, limit=limit, cursor=cursor)
    return {
        "items": [run.model_dump(mode="json") for run in page.items],
        "next_cursor": page.next_cursor,  # opaque: hand it back for the next page
    }


async def counts_per_status(workflow: str | None = None) -> dict[str, int]:
    """The numbers above the table: one count per status, each from its index."""
    counts = {}
    for status in typing.get_args(RunStatus):
        query = WorkflowRun.find(WorkflowRun.status == status)
        if workflow is not None:
            query = query.where(WorkflowRun.workflow == workflow)
        counts[status] = await query.count()
    return counts


# --8<-- [end:handler]


async def main() -> None:
    async with fm.connect(key_prefix="recipe-dashboard") as db:
        try:
            for n in range(25):
                run = await WorkflowRun.start("summarize" if n % 2 else "translate", input={"n": n})
                if n % 5 == 0:
                    await run.fail({"message": "model timed out"})
                elif n % 3 == 0:
                    await run.finish({"ok": True})
            # --8<-- [start:use]
            print("counts:", await counts_per_status())
            shown, cursor = 0, None
            while True:  # every errored run, newest first, 2 per page
                page = await runs_page(status="errored", cursor=cursor, limit=2)
                shown += len(page["items"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            print("errored runs paged through:", shown)
            summarize = await runs_page(workflow="summarize", status="active")
            print("active summarize runs on the first page:", len(summarize["items"]))
            # --8<-- [end:use]
            assert shown == 5
        finally:
            await delete_prefix(db)


if __name__ == "__main__":
    asyncio.run(main())
