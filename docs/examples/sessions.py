"""An agent session: append messages, compact, load the context a model call needs."""

import asyncio

import flue_models as fm
from flue_models import CompactionEntry, MessageEntry, Session, session_key


async def main() -> None:
    async with fm.connect(key_prefix="sessions-example"):
        # --8<-- [start:append]
        session = await Session.open(session_key("support", "eu-1", "claude", "main"))
        await session.append(MessageEntry(id="m1", role="user", content="Hi, my order is late"))
        await session.append_many(  # without parent_id: each follows the one before
            [
                MessageEntry(id="m2", role="assistant", content="Which order?"),
                MessageEntry(id="m3", role="user", content="#4521"),
            ]
        )
        # --8<-- [end:append]

        # --8<-- [start:compact]
        await session.append(
            CompactionEntry(
                id="c1",
                parent_id="m3",
                summary="The user asks about late order #4521.",
                first_kept_entry_id="m3",
                tokens_before=1200,
            )
        )
        await session.append(
            MessageEntry(id="m4", parent_id="c1", role="assistant", content="Checking #4521")
        )
        loaded = await Session.load(session.id)  # record and entries, read atomically
        assert loaded is not None
        context = loaded.context()
        print("summary:", context.summary)
        print("messages:", [m.id for m in context.messages])  # ['m3', 'm4']
        # --8<-- [end:compact]

        # --8<-- [start:context]
        partial = await Session.load_context(session.id)  # reads m3, c1, m4: the context
        assert partial is not None
        assert partial.context() == context
        page = await Session.history(session.id, limit=2)  # older entries, newest page first
        assert page is not None
        print("last two:", [e.id for e in page.entries], "older:", page.next_cursor)
        # --8<-- [end:context]

        # --8<-- [start:fork]
        retry = await Session.fork(session.id, "m3", new_id=f"{session.id}/retry")
        await retry.append(
            MessageEntry(id="m4b", parent_id="m3", role="assistant", content="Let me look")
        )
        forked = await Session.load(retry.id)  # m1..m3 shared with the parent, then m4b
        assert forked is not None
        print("fork:", [e.id for e in forked.entries])
        # --8<-- [end:fork]

        # --8<-- [start:list]
        recent = await Session.list(agent="support", limit=20)  # most recently updated first
        print("support sessions:", [s.id for s in recent.items])
        # --8<-- [end:list]

        # --8<-- [start:metadata]
        loaded.metadata["title"] = "Late order"
        await loaded.save()  # under the version check; appends never conflict with it
        # --8<-- [end:metadata]

        # --8<-- [start:snapshot]
        await Session.delete_id(retry.id)  # a session with forks keeps its history
        await Session.save_snapshot(
            session.id,
            [MessageEntry(id="s1", role="system", content="fresh start")],
            metadata={"title": "Replaced"},
        )
        # --8<-- [end:snapshot]

        # --8<-- [start:delete]
        async def delete_snapshot(session_id: str) -> None:
            await Session.delete_id(session_id)  # or a snapshot kept elsewhere

        # Refused while a submission of the session is queued or running; removes the
        # settled ones (dispatches keep a receipt), then the snapshot, exactly once.
        await fm.Submission.delete_session(session.id, delete_snapshot=delete_snapshot)
        assert await Session.load(session.id) is None
        # --8<-- [end:delete]


if __name__ == "__main__":
    asyncio.run(main())
