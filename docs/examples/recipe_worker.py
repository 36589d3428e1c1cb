"""Recipe: a worker loop with claims, leases and recovery.

Two workers take turns at the runnable heads (one per session, in admission order); a
third plays a worker that dies holding a claim, and the recovery pass hands its expired
lease over and finishes the turn.
"""

import asyncio
import datetime as dt

from example_support import delete_prefix

import flue_models as fm
from flue_models import Attempt, Submission

LEASE = dt.timedelta(seconds=30)


# --8<-- [start:turn]
async def run_turn(attempt: Attempt) -> None:
    """One turn of work under a claim: journal it, apply the input, commit, settle."""
    await Submission.journal_begin(attempt)
    await Submission.mark_input_applied(attempt)
    await Submission.journal_phase(attempt, "provider_started")
    await Submission.journal_commit(attempt, leaf_id=f"leaf-{attempt.submission_id}")
    await Submission.finish(attempt)


async def work_once(owner: str) -> int:
    """Claim what is runnable now and run it; return how many turns ran."""
    done = 0
    for row in await Submission.list_runnable(limit=10):
        attempt = await Submission.claim(
            row.id, owner_id=owner, lease=LEASE, session_id=row.session_id
        )
        if attempt is None:
            continue  # another worker won this head
        await run_turn(attempt)
        done += 1
    return done


# --8<-- [end:turn]


# --8<-- [start:recover]
async def recover(owner: str) -> list[str]:
    """Take over every running submission whose lease ran out, and finish its turn."""
    recovered = []
    for row in await Submission.list_expired():
        attempt = await Submission.replace_attempt(row.id, row.attempt_id, owner, lease=LEASE)
        if attempt is None:
            continue  # another recoverer took it, or its worker finished meanwhile
        journal = await Submission.read_journal(row.id)
        print(f"recovering {row.id}: phase {journal.phase if journal else 'none'}")
        await run_turn(attempt)
        recovered.append(row.id)
    return recovered


# --8<-- [end:recover]


async def main() -> None:
    async with fm.connect(key_prefix="recipe-worker") as db:
        try:
            for n in range(3):
                await Submission.admit_dispatch(f"d-{n}", session_id=f"s-{n % 2}", input={"n": n})
            # A worker that dies mid-turn: its lease is already over (a lease of 0).
            lost = await Submission.claim("d-0", owner_id="worker-lost", lease=dt.timedelta(0))
            assert lost is not None
            await Submission.journal_begin(lost)

            # --8<-- [start:loop]
            ran = await asyncio.gather(work_once("worker-a"), work_once("worker-b"))
            print("turns run by the two workers:", sum(ran))  # d-1 (s-1's head)
            print("recovered:", await recover("worker-c"))  # d-0, its lease expired
            print("then:", await work_once("worker-a"), "more")  # d-2, s-0's next head
            # --8<-- [end:loop]
            for n in range(3):
                row = await Submission.get(f"d-{n}")
                assert row is not None
                assert row.status == "settled"
        finally:
            await delete_prefix(db)


if __name__ == "__main__":
    asyncio.run(main())
