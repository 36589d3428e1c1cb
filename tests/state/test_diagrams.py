"""The state diagrams of the docs are the code's: each names exactly the statuses of its
model, and every arrow, performed on a real server, leads where it points (an arrow may
name several operations, comma-separated)."""

from __future__ import annotations

import re
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import flue_models as fm
from flue_models import Submission, WorkflowRun
from flue_models.state.run import RunStatus
from flue_models.state.submission import Status

DOCS = Path(__file__).parents[2] / "docs"
NODE = r"(\w+)(?:\(\( \)\)|\(\[\w+\]\))?"
EDGE = re.compile(rf"^\s*{NODE} -->\|\"?([^|\"]+)\"?\| {NODE}$")


def diagram_edges(page: str, diagram: str) -> list[tuple[str, str, str]]:
    """The arrows of a state diagram the docs page shows (its source in docs/diagrams/),
    one per operation; the start node is ``[*]``."""
    assert f"assets/diagrams/{diagram}.svg)" in (DOCS / page).read_text(), page
    header, *lines = (DOCS / "diagrams" / f"{diagram}.mmd").read_text().strip().splitlines()
    assert header == "flowchart LR", diagram
    edges = []
    for line in lines:
        found = EDGE.match(line)
        assert found, f"{diagram}: not an arrow: {line!r}"
        source, labels, target = found.groups()
        source = "[*]" if source == "start" else source
        edges += [(source, target, label) for label in labels.split(", ")]
    return edges


def states(edges: list[tuple[str, str, str]]) -> set[str]:
    return {s for edge in edges for s in edge[:2]} - {"[*]"}


# Submissions -----------------------------------------------------------------------------

Step = Callable[[str], Awaitable[None]]


async def queued(sid: str) -> None:
    await Submission.admit_direct(sid, session_id=f"s-{sid}", input={})


async def running(sid: str) -> None:
    await queued(sid)
    assert await Submission.claim(sid, "w") is not None


async def attempt_of(sid: str) -> fm.Attempt:
    row = await Submission.get(sid)
    assert row is not None
    assert row.attempt_id is not None
    assert row.owner_id is not None
    assert row.lease_expires_at is not None
    return fm.Attempt(sid, row.attempt_id, row.owner_id, row.lease_expires_at)


async def claim_past_max_attempts(sid: str) -> None:
    row = await Submission.get(sid)
    assert row is not None
    for _ in range(row.max_attempts):
        attempt = await Submission.claim(sid, "w")
        assert attempt is not None
        assert await Submission.requeue(attempt)
    assert await Submission.claim(sid, "w") is None  # out of attempts: settled instead


SUBMISSION_STEPS: dict[str, tuple[Step, Step]] = {
    # label: (make a submission in the arrow's source status, perform the arrow)
    "admit": (lambda sid: _nothing(), queued),
    "claim": (queued, lambda sid: _claimed(sid)),
    "settle_queued": (queued, lambda sid: _settled_queued(sid)),
    "claim past max_attempts": (queued, claim_past_max_attempts),
    "requeue": (running, lambda sid: _attempt_step(sid, Submission.requeue)),
    "replace_attempt": (running, lambda sid: _replaced(sid)),
    "renew_leases": (running, lambda sid: _renewed(sid)),
    "finish": (running, lambda sid: _attempt_step(sid, Submission.finish)),
    "fail": (running, lambda sid: _failed(sid)),
}


async def _nothing() -> None:
    return None


async def _claimed(sid: str) -> None:
    assert await Submission.claim(sid, "w") is not None


async def _settled_queued(sid: str) -> None:
    assert await Submission.settle_queued(sid, "aborted")


async def _attempt_step(sid: str, step: Callable[[fm.Attempt], Awaitable[bool]]) -> None:
    assert await step(await attempt_of(sid))


async def _replaced(sid: str) -> None:
    row = await Submission.get(sid)
    assert row is not None
    assert await Submission.replace_attempt(sid, row.attempt_id, "w2") is not None


async def _renewed(sid: str) -> None:
    assert await Submission.renew_leases("w", [sid]) == [sid]


async def _failed(sid: str) -> None:
    assert await Submission.fail(await attempt_of(sid), {"message": "x"})


def test_the_submission_diagram_names_the_statuses_and_operations() -> None:
    edges = diagram_edges("submissions.md", "submission-lifecycle")
    assert states(edges) == set(typing.get_args(Status))
    assert {label for _s, _t, label in edges if label} == set(SUBMISSION_STEPS)


@pytest.mark.parametrize(
    "edge",
    [e for e in diagram_edges("submissions.md", "submission-lifecycle") if e[2]],
    ids=lambda e: e[2],
)
async def test_each_submission_arrow_leads_where_it_points(
    db: fm.Database, edge: tuple[str, str, str]
) -> None:
    source, target, label = edge
    prepare, perform = SUBMISSION_STEPS[label]
    await prepare("sub-1")
    if source != "[*]":
        row = await Submission.get("sub-1")
        assert row is not None
        assert row.status == source
    await perform("sub-1")
    row = await Submission.get("sub-1")
    assert row is not None
    assert row.status == target


# Runs ------------------------------------------------------------------------------------

RUN_STEPS: dict[str, Callable[[WorkflowRun], Awaitable[object]]] = {
    "finish": lambda run: run.finish({"ok": True}),
    "fail": lambda run: run.fail({"message": "x"}),
    "cancel": lambda run: run.cancel(),
}


def test_the_run_diagram_names_the_statuses_and_operations() -> None:
    edges = diagram_edges("runs.md", "run-lifecycle")
    assert states(edges) == set(typing.get_args(RunStatus))
    assert {label for _s, _t, label in edges if label} == {"start", *RUN_STEPS}


@pytest.mark.parametrize(
    "edge", [e for e in diagram_edges("runs.md", "run-lifecycle") if e[2]], ids=lambda e: e[2]
)
async def test_each_run_arrow_leads_where_it_points(
    db: fm.Database, edge: tuple[str, str, str]
) -> None:
    source, target, label = edge
    run = await WorkflowRun.start("wf", run_id="r-1")
    if label != "start":
        assert run.status == source
        assert await RUN_STEPS[label](run) == fm.EndResult.ENDED
    stored = await WorkflowRun.get("r-1")
    assert stored is not None
    assert stored.status == target
