"""``flue-models demo``: a small simulated agent workload on real Redis state.

It starts a few workflow runs whose steps stream events (one of them fails), shows a
live tail of one run while it progresses, then lists runs by status. Beside the runs, two
agent conversations: prompts admitted as submissions, one answered by a simulated worker
(claimed, settled, its messages in the session), one left queued. The state stays:
running the demo again shows the earlier runs still there.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from flue_models.connection import Database
from flue_models.state.events import Event
from flue_models.state.run import WorkflowRun
from flue_models.state.session import Session, session_key
from flue_models.state.session_window import MessageEntry
from flue_models.state.submission import Submission
from flue_models.terminal import Progress, table

#: (workflow, input, steps, fails): the simulated runs of one demo.
WORKLOAD = (
    ("summarize", {"text": "Quarterly report, 40 pages"}, 4, False),
    ("translate", {"text": "Bonjour", "to": "en"}, 3, False),
    ("日報", {"team": "support"}, 3, False),
    ("summarize", {"text": "A corrupted PDF"}, 2, True),
)
#: Pause between simulated steps, so the live tail has something to show.
STEP_PAUSE = 0.15


async def _simulate(run: WorkflowRun, steps: int, fails: bool) -> None:
    events = run.events
    await events.append({"type": "log", "message": f"{run.workflow} started"})
    for step in range(1, steps + 1):
        await asyncio.sleep(STEP_PAUSE)  # the simulated agent at work
        await events.append({"type": "progress", "step": step, "of": steps})
    if fails:
        await events.append({"type": "log", "message": "could not read the input"})
        await run.fail(error={"message": "input unreadable"})
    else:
        await run.finish(result={"steps": steps})


def _show(event: Event[dict[str, object]]) -> str:
    data = dict(event.data)
    kind = data.pop("type", "?")
    return f"  {event.offset[-4:]}  {kind:<8} {json.dumps(data, ensure_ascii=False)}"


async def run_demo(
    db: Database,
    out: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> None:
    """Run the demo workload on ``db`` and print what happens.

    If it is interrupted (Ctrl-C, a closed output pipe, an error), the runs it started
    and did not finish are cancelled, so no run is left ``active``.

    Example:
        ```python
        async with fm.connect() as db:
            await run_demo(db)
        ```
    """
    earlier = await WorkflowRun.find().using(db).count()
    server = f" {db.report.flavor} {db.report.version}" if db.report else ""
    where = db.url.display + (f" (embedded{server}, {db.embedded.data_dir})" if db.embedded else "")
    out(f"flue-models demo on {where}, prefix {db.keys.prefix!r}")
    out(f"{earlier} run(s) from earlier demos are stored here")

    runs: list[WorkflowRun] = []
    workers: list[asyncio.Task[None]] = []
    try:
        for number, (workflow, data, steps, fails) in enumerate(WORKLOAD, start=1):
            if progress is not None:
                progress(f"starting run {number} of {len(WORKLOAD)} ({workflow})")
            run = await WorkflowRun.start(workflow, input=data, db=db, metadata={"demo": True})
            runs.append(run)
            workers.append(asyncio.create_task(_simulate(run, steps, fails)))
        if progress is not None:
            progress.done()  # clear the line before the tail prints
        watched = runs[0]
        out(f"\nlive tail of run {watched.id} ({watched.workflow}):")
        async for event in watched.events.tail(after="-1"):
            out(_show(event))
        out("  (stream closed: the run ended)")
        await asyncio.gather(*workers)
    except BaseException:
        await _abandon(db, runs, workers)
        raise

    for status in ("completed", "errored"):
        page = await WorkflowRun.list(status=status, limit=5, db=db)
        total = await WorkflowRun.find(WorkflowRun.status == status).using(db).count()
        out(f"\n{status}: {total} run(s); newest:")
        rows = [
            [f"{p.started_at:%Y-%m-%d %H:%M:%S}", p.workflow, p.id, f"{p.duration_ms} ms"]
            for p in page.items
        ]
        for line in table(rows):
            out(f"  {line}")
    out(f"\nnow {earlier + len(runs)} run(s) stored; run the demo again to see them stay.")
    out(await _conversations(db))


async def _conversations(db: Database) -> str:
    """Two agent sessions: one prompt answered by a simulated worker, one left queued."""
    answered = await Session.open(
        session_key("support", "eu-1", "demo", uuid.uuid4().hex[:8]), db=db
    )
    waiting = await Session.open(
        session_key("billing", "us-1", "demo", uuid.uuid4().hex[:8]), db=db
    )
    prompt = {"prompt": "Where is my order?"}
    row = await Submission.admit_direct(
        uuid.uuid4().hex, session_id=answered.id, input=prompt, db=db
    )
    await Submission.admit_direct(uuid.uuid4().hex, session_id=waiting.id, input=prompt, db=db)
    attempt = await Submission.claim(
        row.id, owner_id="demo-worker", session_id=row.session_id, db=db
    )
    if attempt is None:  # only this demo knows the id: it is this session's head
        raise RuntimeError(f"the demo could not claim its own submission {row.id}")
    await Submission.mark_input_applied(attempt, db=db)
    question = MessageEntry(
        id=uuid.uuid4().hex, role="user", content=prompt["prompt"], submission_id=row.id
    )
    reply = MessageEntry(
        id=uuid.uuid4().hex, parent_id=question.id, role="assistant",
        content="It left the warehouse this morning.", submission_id=row.id,
    )  # fmt: skip
    await answered.append_many([question, reply])
    await Submission.finish(attempt, db=db)
    return (
        f"sessions: {answered.id} answered (2 entries, its submission settled); "
        f"{waiting.id} has a queued prompt. 'flue-models serve' shows them all."
    )


async def _abandon(
    db: Database, runs: list[WorkflowRun], workers: list[asyncio.Task[None]]
) -> None:
    """Stop the simulated workers and cancel the runs they did not end."""
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    for run in runs:  # the first terminal state wins: ended runs stay as they ended
        await asyncio.shield(WorkflowRun.cancel_id(run.id, db=db))
