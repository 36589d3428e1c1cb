"""Recipe: a chat backend on sessions: append each turn, build the prompt from the
context, compact when it grows, list a user's conversations."""

import asyncio
import uuid

from example_support import delete_prefix

import flue_models as fm
from flue_models import CompactionEntry, MessageEntry, Session, session_key

#: Compact when the context holds more messages than this; keep the last KEEP.
MAX_CONTEXT, KEEP = 8, 4


async def fake_model(summary: str | None, messages: list[MessageEntry]) -> str:
    return f"(reply to {messages[-1].content!r}, seeing {len(messages)} messages)"


# --8<-- [start:turn]
async def chat_turn(session_id: str, text: str) -> str:
    """One user message in, one assistant reply out, appended to the session."""
    session = await Session.open(session_id, context_only=True)  # O(context), not O(history)
    user = MessageEntry(id=uuid.uuid4().hex, role="user", content=text)  # after the leaf
    await session.append(user)  # safe to retry after a lost reply
    context = session.context()
    reply = await fake_model(context.summary, context.messages)
    answer = MessageEntry(id=uuid.uuid4().hex, role="assistant", content=reply)
    await session.append(answer)
    if len(session.context().messages) > MAX_CONTEXT:
        await compact(session)
    return reply


async def compact(session: Session) -> None:
    """Summarise what falls out of the context: one appended entry, nothing rewritten."""
    messages = session.context().messages
    kept = messages[-KEEP:]
    summary = f"{len(messages) - KEEP} earlier messages about the weather"
    await session.append(
        CompactionEntry(
            id=uuid.uuid4().hex,
            parent_id=session.leaf_id,
            summary=summary,
            first_kept_entry_id=kept[0].id,
            tokens_before=len(messages) * 50,
        )
    )


# --8<-- [end:turn]


async def main() -> None:
    async with fm.connect(key_prefix="recipe-chat") as db:
        try:
            # --8<-- [start:use]
            alice = session_key("weather-bot", "eu-1", "gpt", "alice")
            for n in range(7):
                await chat_turn(alice, f"question {n}")
            await chat_turn(session_key("weather-bot", "eu-1", "gpt", "bob"), "hello")
            loaded = await Session.load_context(alice)
            assert loaded is not None
            context = loaded.context()
            print("summary:", context.summary)
            print("messages in the context:", len(context.messages))
            page = await Session.list(agent="weather-bot")  # most recently updated first
            print("conversations:", [s.id.rsplit("/", 1)[1] for s in page.items])
            # --8<-- [end:use]
            assert context.summary is not None
            assert page.items[0].id.endswith("bob")
        finally:
            await delete_prefix(db)


if __name__ == "__main__":
    asyncio.run(main())
