"""The layout of the Flue recovery contract and of retention.

- Receipts of removed dispatches move out of the one ``submission/receipts`` hash into
  one key each (``submission/receipt:<id>``), listed by age in ``submission/receipt_times``
  (scored by this migration's time: when they were kept is not known), so retention can
  prune them by age.
- Journals become one slot per submission: ``attempt``, ``revision``, ``phase``,
  ``detail``, ``stream_key``, ``consumed``, ``committed`` (from ``phase:<attempt>`` and
  ``detail:<attempt>`` per attempt, and ``consumed:<stream>``).
- Closed streams enter ``stream/closed``, scored by when they closed.
- ``Submission.settled_at`` and ``WorkflowRun.ended_at`` gain range indexes (retention
  walks them): both collections' indexes are rebuilt from their rows.

Every step is idempotent, so a rerun after a failure finishes the work.
"""

import json

from flue_models.errors import WrongKeyTypeError
from flue_models.replies import reply_pairs, reply_text
from flue_models.schema import MigrationContext
from flue_models.state.run import WorkflowRun
from flue_models.state.submission import Submission


async def up(ctx: MigrationContext) -> None:
    """Move receipts and journals, list closed streams, index the retention times."""
    db, keys = ctx.db, ctx.db.keys
    old_receipts = keys.collection_key("submission", "receipts")
    kind = reply_text(await db.client.type(old_receipts))
    if kind not in ("none", "hash"):
        raise WrongKeyTypeError("0003_flue_contract", old_receipts, kind, "hash")
    now_ms = int((await db.server_time()).timestamp() * 1000)
    moved = 0
    async for submission_id, body in db.client.hscan_iter(old_receipts):
        json.loads(body)  # refuse a malformed receipt before writing anything for it
        receipt_id = reply_text(submission_id)
        await db.run_batch(
            [
                ("SET", Submission._receipt_key(keys, receipt_id), body),
                (
                    "ZADD",
                    keys.collection_key("submission", "receipt_times"),
                    "NX",
                    now_ms,
                    receipt_id,
                ),
            ],
            atomic=True,
        )
        moved += 1
    await db.client.delete(old_receipts)
    ctx.report(f"{moved} receipt(s) moved")

    converted = 0
    async for batch in ctx.batches(Submission):
        for row in batch:
            key = Submission.journal_key(keys, row.id)
            fields = reply_pairs(await db.client.hgetall(key))
            if not fields or "revision" in fields:
                continue
            attempt = fields.get("attempt", "")
            phase = fields.get(f"phase:{attempt}", "before_provider")
            slot = {
                "attempt": attempt,
                "revision": "1",
                "phase": "before_provider" if phase == "begun" else phase,
            }
            if f"detail:{attempt}" in fields:
                slot["detail"] = fields[f"detail:{attempt}"]
            if "committed" in fields:
                slot["committed"] = fields["committed"]
            consumed = [k[9:] for k, v in fields.items() if k.startswith("consumed:")]
            if consumed:
                slot["stream_key"] = consumed[0]
                slot["consumed"] = "1"
            await db.run_batch([("DEL", key), ("HSET", key, *sum(slot.items(), ()))], atomic=True)
            converted += 1
    ctx.report(f"{converted} journal(s) converted")

    closed = 0
    async for raw in db.client.scan_iter(match=keys.stream_meta_pattern(), count=500):
        key = reply_text(raw)
        if not keys.is_stream_meta(key) or reply_text(await db.client.type(key)) != "hash":
            continue  # events, idempotency keys, chunks
        path, is_closed, closed_ms = await db.client.hmget(key, "path", "closed", "closed_ms")
        if path is not None and is_closed == b"1":
            await db.client.zadd(keys.closed_streams(), {path: int(closed_ms or now_ms)})
            closed += 1
    ctx.report(f"{closed} closed stream(s) listed")

    await ctx.rebuild_indexes(Submission)
    await ctx.rebuild_indexes(WorkflowRun)
