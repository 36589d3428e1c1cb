"""Admit work, claim the session's head, journal the attempt, settle it."""

import asyncio

import flue_models as fm
from flue_models import Submission


async def main() -> None:
    async with fm.connect(key_prefix="submissions-example"):
        # --8<-- [start:admit]
        admitted = await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
        replay = await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
        assert replay.submission == admitted.submission  # idempotent on the id
        await Submission.admit_direct("p-2", session_id="s-1", input={"prompt": "and then?"})
        # --8<-- [end:admit]

        # --8<-- [start:work]
        for row in await Submission.list_runnable():  # one head per session
            attempt = await Submission.claim(row.id, owner_id="worker-a", session_id=row.session_id)
            if attempt is None:
                continue  # another worker won the claim
            await Submission.journal_begin(attempt)
            await Submission.mark_input_applied(attempt)
            await Submission.journal_phase(attempt, "provider_started")
            await Submission.journal_commit(attempt, leaf_id="m7")
            await Submission.finish(attempt)
            print("completed", row.id)
        # --8<-- [end:work]

        # --8<-- [start:recover]
        for row in await Submission.list_expired():  # leases that ran out
            handed = await Submission.replace_attempt(row.id, row.attempt_id, "worker-b")
            print("taken over", row.id, handed is not None)
        # --8<-- [end:recover]

        # --8<-- [start:delete]
        await Submission.settle_queued("p-2", "aborted", error="user left")
        print("removed", await Submission.delete_session("s-1"))
        receipt = await Submission.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
        print("receipt kept:", receipt.receipt is not None)
        # --8<-- [end:delete]


if __name__ == "__main__":
    asyncio.run(main())
