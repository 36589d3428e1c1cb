"""Admit work, claim the session's head, journal the attempt, settle it."""

import asyncio

import flue_models as fm
from flue_models import submissions


async def main() -> None:
    async with fm.connect(key_prefix="submissions-example"):
        # --8<-- [start:admit]
        admitted = await submissions.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
        replay = await submissions.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
        assert replay.submission == admitted.submission  # idempotent on the id
        await submissions.admit_direct("p-2", session_id="s-1", input={"prompt": "and then?"})
        # --8<-- [end:admit]

        # --8<-- [start:work]
        for row in await submissions.list_runnable():  # one head per session
            attempt = await submissions.claim(row.id, owner_id="worker-a")
            if attempt is None:
                continue  # another worker won the claim
            await submissions.journal_begin(attempt)
            await submissions.mark_input_applied(attempt)
            await submissions.journal_phase(attempt, "provider_started")
            await submissions.journal_commit(attempt, leaf_id="m7")
            await submissions.complete(attempt)
            print("completed", row.id)
        # --8<-- [end:work]

        # --8<-- [start:recover]
        for row in await submissions.list_expired():  # leases that ran out
            handed = await submissions.replace_attempt(row.id, row.attempt_id, "worker-b")
            print("taken over", row.id, handed is not None)
        # --8<-- [end:recover]

        # --8<-- [start:delete]
        await submissions.settle_queued("p-2", "aborted", error="user left")
        print("removed", await submissions.delete_session("s-1"))
        receipt = await submissions.admit_dispatch("d-1", session_id="s-1", input={"task": 1})
        print("receipt kept:", receipt.receipt is not None)
        # --8<-- [end:delete]


if __name__ == "__main__":
    asyncio.run(main())
