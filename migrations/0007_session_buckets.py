"""Spread the sessions over 64 buckets (64 Cluster slots), and mark each fork on its parent.

``Session`` declares ``SESSION_BUCKETS`` (64) buckets: each session, with its entries,
its index entries and its other owned keys, moves from bucket ``0`` into the bucket of
its id, one atomic call per session. A fork and its parent may then be in two buckets,
so the guard that keeps a parent from being replaced or deleted while a fork shares its
history is no longer the ``fork_of`` index (spread over the buckets) but the parent's
own ``forks`` set, in its bucket: this migration writes one mark per fork there.

Checked before the first write: every key of the collection is one of the layout, every
session has a readable record of its index entries and a readable ``fork_of``, and, when
sessions move, no other flue-models client is connected to the prefix and the server is
not a cluster (migrate on a standalone server, then import). Idempotent and resumable: a
session already in its bucket stays, and a mark is written only where there is none.
``down`` gathers the sessions back into bucket ``0`` and removes the marks (the older
layout guards by the ``fork_of`` index).
"""

from flue_models.errors import SchemaError
from flue_models.schema import MigrationContext
from flue_models.schema.split import collection_records, move_collection
from flue_models.state.session import SESSION_BUCKETS, Session

SPEC = Session.__flue_spec__
BATCH = 500


async def up(ctx: MigrationContext) -> None:
    """Move each session into the bucket of its id, then mark each fork on its parent."""
    forks = await _forks(ctx)
    report = await move_collection(ctx.db, SPEC.collection, SESSION_BUCKETS, progress=ctx.report)
    now = int((await ctx.db.server_time()).timestamp() * 1000)
    marks = [("ZADD", Session._forks_key(ctx.db.keys, p), "NX", now, c) for c, p in forks]
    for start in range(0, len(marks), BATCH):
        await ctx.db.run_batch(marks[start : start + BATCH])
    ctx.report(
        f"{report.moved} of {report.records} session(s) moved into {SESSION_BUCKETS} "
        f"buckets; {len(forks)} fork(s) marked on their parents"
    )


async def down(ctx: MigrationContext) -> None:
    """Gather every session back into bucket 0 and remove the marks of forks."""
    report = await move_collection(ctx.db, SPEC.collection, 1, progress=ctx.report)
    zero = ctx.db.keys.in_bucket(0)
    records = await collection_records(ctx.db, SPEC.collection)
    marks = [("DEL", zero.owned(SPEC.collection, Session.FORKS, i)) for _k, _b, i in records]
    for start in range(0, len(marks), BATCH):
        await ctx.db.run_batch(marks[start : start + BATCH])
    ctx.report(f"{report.moved} of {report.records} session(s) moved back into one bucket")


async def _forks(ctx: MigrationContext) -> list[tuple[str, str]]:
    """Every (fork, parent) pair, read and checked before anything is written; a fork
    whose parent is gone (its shared history with it) is reported and left unmarked."""
    records = await collection_records(ctx.db, SPEC.collection)
    ids = {record_id for _key, _bucket, record_id in records}
    codec = SPEC.codecs["fork_of"]
    pairs: list[tuple[str, str]] = []
    orphans = 0
    for start in range(0, len(records), BATCH):
        part = records[start : start + BATCH]
        raws = await ctx.db.run_batch([("HGET", key, "fork_of") for key, _b, _i in part])
        for (key, _bucket, record_id), raw in zip(part, raws, strict=True):
            try:
                parent = codec.decode(raw) if raw is not None else None
            except ValueError as exc:
                raise SchemaError(
                    f"{key} has an unreadable fork_of ({raw[:80]!r}: {exc}); repair or delete "
                    "the session, then migrate again. Nothing was moved."
                ) from None
            if parent in ids:
                pairs.append((record_id, parent))
            elif parent is not None:
                orphans += 1
    if orphans:
        ctx.report(f"{orphans} fork(s) of sessions that are gone left unmarked (see verify)")
    return pairs
