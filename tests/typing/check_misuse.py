"""Only type-checked (mypy --strict in .ci/run): misuse of the typed APIs is rejected.

Each misuse line carries a ``type: ignore`` naming the error mypy must report. With
``--strict`` (``warn_unused_ignores``), an ignore that mypy does not need is itself an
error, so if any of these calls stopped being rejected, ``.ci/run`` would fail.
"""

from __future__ import annotations

from typing import assert_type

import flue_models as fm
from flue_models import EndResult, Submission, WorkflowRun
from tests.integration.models import Ticket


async def end_runs(run: WorkflowRun, attempt: fm.Attempt) -> None:
    assert_type(await run.finish(result={"ok": True}), EndResult)
    assert_type(await WorkflowRun.finish_id("r-1", result=1), EndResult)
    await run.finish(reslt=1)  # type: ignore[call-arg]
    await run.fail(eror="x")  # type: ignore[call-arg]
    await WorkflowRun.finish_id(123)  # type: ignore[arg-type]
    await WorkflowRun.cancel_id()  # type: ignore[call-arg]
    assert_type(await Submission.claim("sub-1", "worker-a"), fm.Attempt | None)
    assert_type(await Submission.list_runnable(), list[Submission])
    assert_type(await Submission.get("sub-1"), Submission | None)
    assert_type(await Submission.admit_direct("p-1", session_id="s", input={}), Submission)
    assert_type(await Submission.finish(attempt), bool)
    await Submission.claim("sub-1", ownr="w")  # type: ignore[call-arg]
    await Submission.finish("sub-1")  # type: ignore[arg-type]
    await Submission.fail(attempt, eror="x")  # type: ignore[call-arg]


async def delete_records(ticket: Ticket) -> None:
    assert_type(await ticket.delete(), bool)
    assert_type(await Ticket.delete_id("t-1"), bool)
    await ticket.delete("t-1")  # type: ignore[call-arg, arg-type]
    await Ticket.delete_id(42)  # type: ignore[arg-type]
    await Ticket.using(await fm.connect()).delete_id(b"t-1")  # type: ignore[arg-type]
