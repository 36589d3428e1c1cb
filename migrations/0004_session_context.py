"""Session listings and context loads.

- Sessions are ordered by ``updated_at`` (they were by ``created_at``) and indexed by
  ``agent``, ``instance`` and ``harness`` (the parts of a ``session_key`` id) and by
  ``fork_of``: the rows gain those fields and the Session indexes are rebuilt from them.
- Each session's ``context_from`` (where its latest compaction's kept entries start) is
  computed once from its entries, so its first context load reads only the context.

Every step is idempotent, so a rerun after a failure finishes the work.
"""

from flue_models.schema import MigrationContext
from flue_models.state.session import Session
from flue_models.state.session_window import Need, Window, decode_run, walk_context


async def up(ctx: MigrationContext) -> None:
    """Rebuild the Session indexes, then record where each session's context starts."""
    db = ctx.db
    await ctx.rebuild_indexes(Session)
    hinted = 0
    async for batch in ctx.batches(Session):
        for row in batch:
            key = Session._entries_key(db.keys, row.id)
            window = Window(0)  # sessions written before this migration are not forks
            window.add(decode_run(key, await db.client.lrange(key, 0, -1), 0))
            found = walk_context(row.leaf_id, window)
            assert not isinstance(found, Need)  # a window from the start needs nothing
            if found[1] > 0:
                record_key = db.keys.record("session", row.id)
                await db.client.hset(record_key, "context_from", found[1])
                hinted += 1
    ctx.report(f"{hinted} compacted session(s) located")
