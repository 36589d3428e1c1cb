"""Spread the submissions over 16 buckets (16 Cluster slots), by session.

``Submission`` declares ``SUBMISSION_BUCKETS`` (16) buckets and places its rows by
``session_id``: each submission, with its journal and index entries, moves from bucket
``0`` into the bucket of its session, one atomic call per submission, and the schema
record keeps the count and the field. The keys of the whole collection move too:

* each session's deletion marker (``deleting:<session>``) and its entry in the set of
  deletions in progress go to the session's bucket;
* each receipt (``receipt:<id>``) and its entry in ``receipt_times`` go to the bucket of
  the submission's id (an admission knows the id, not the session);
* every bucket's sequence counter starts at the highest one (numbers keep increasing for
  every session);
* ``attempt_markers`` stays in bucket ``0``.

Checked before the first write: every key of the collection is one of the layout and of
its type, every submission has a readable record of its index entries and a session, no
key it moves to exists, and, when anything moves, no other flue-models client is
connected to the prefix and the server is not a cluster (migrate on a standalone server,
then import). Idempotent and resumable: what is in its bucket stays, so a rerun moves
what is left. ``down`` gathers everything back into bucket ``0``.
"""

from dataclasses import dataclass, field

from redis.asyncio.cluster import RedisCluster

from flue_models.connection import Database
from flue_models.errors import SchemaError
from flue_models.keys import bucket_of, decode_segment
from flue_models.replies import reply_scored, reply_text
from flue_models.schema import MigrationContext
from flue_models.schema.split import kept_keys, move_collection
from flue_models.state.submission import SUBMISSION_BUCKETS, Submission

COLLECTION = Submission.__flue_spec__.collection
#: The keys of the buckets that belong to no one submission, and their types.
KINDS = {
    "sequence": "string",
    "receipt_times": "zset",
    "deletions": "set",
    "attempt_markers": "zset",
    "receipt": "string",
    "deleting": "string",
}


async def up(ctx: MigrationContext) -> None:
    """Move each submission into its session's bucket, then the collection's own keys."""
    await _spread(ctx, SUBMISSION_BUCKETS)


async def down(ctx: MigrationContext) -> None:
    """Gather every submission and every key of the collection back into bucket 0."""
    await _spread(ctx, 1)


@dataclass
class _Plan:
    """What moves besides the rows, read and checked before the first write."""

    renames: list[tuple[str, str, str]] = field(default_factory=list)  # source, target, type
    members: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    sequences: dict[int, int] = field(default_factory=dict)  # bucket -> counter
    gone: list[str] = field(default_factory=list)  # keys of buckets beyond the count


async def _spread(ctx: MigrationContext, buckets: int) -> None:
    db = ctx.db
    plan = await _plan(db, buckets)  # every check, before anything is written
    report = await move_collection(
        db, COLLECTION, buckets, partition_by="session_id", keep=KINDS, progress=ctx.report
    )
    for source, target, kind in plan.renames:  # two buckets by design (not a cluster)
        reply = await db.scripts.call(
            "keys_move", keys=[source, target], args=[kind], any_slots=True
        )
        if reply_text(reply[0]) != "moved":
            raise SchemaError(f"{target} appeared while {source} moved to it; nothing of it moved.")
    for command, source, target, member, score in plan.members:  # the target first
        if command == "zset":
            await db.run_batch([("ZADD", target, repr(score), member)])
            await db.run_batch([("ZREM", source, member)])
        else:
            await db.run_batch([("SADD", target, member)])
            await db.run_batch([("SREM", source, member)])
    highest = max(plan.sequences.values(), default=0)
    for bucket in range(buckets):
        if plan.sequences.get(bucket, 0) < highest:
            key = db.keys.in_bucket(bucket).collection_key(COLLECTION, "sequence")
            await db.client.set(key, str(highest))
    for key in plan.gone:
        await db.client.delete(key)
    ctx.report(
        f"{report.moved} of {report.records} submission(s) moved into {buckets} bucket(s); "
        f"{len(plan.renames)} marker(s) and receipt(s), {len(plan.members)} set entries moved"
    )


async def _plan(db: Database, buckets: int) -> _Plan:
    """Read every key of the collection that is no submission's and say where it goes;
    refuse a key of another type than the layout's, or a target that exists."""
    plan = _Plan()
    found = await kept_keys(db, COLLECTION, KINDS)
    types = await db.run_batch([("TYPE", kept.key) for kept in found])
    for kept, kind in zip(found, types, strict=True):
        bucket, key, name, segment = kept.bucket, kept.key, kept.name, kept.segment or ""
        if reply_text(kind) != KINDS[name]:
            raise SchemaError(
                f"{key} is a {reply_text(kind)}, not the {KINDS[name]} of the layout. "
                "Nothing was moved."
            )
        if name in ("receipt", "deleting"):
            owner = decode_segment(segment).decode("utf-8", "surrogateescape")
            target = db.keys.in_bucket(bucket_of(owner, buckets))
            if target.bucket != bucket:
                plan.renames.append((key, target.owned(COLLECTION, name, owner), "string"))
        elif name in ("receipt_times", "deletions"):  # each member to its bucket
            if name == "receipt_times":
                members = reply_scored(await db.client.zrange(key, 0, -1, withscores=True))
            else:
                members = [(reply_text(m), 0.0) for m in await db.client.smembers(key)]
            for member, score in members:
                to = db.keys.in_bucket(bucket_of(member, buckets))
                if to.bucket != bucket:
                    target_set = to.collection_key(COLLECTION, name)
                    plan.members.append((KINDS[name], key, target_set, member, score))
        elif name == "sequence":
            value = reply_text(await db.client.get(key))
            if not value.lstrip("-").isdigit():
                raise SchemaError(f"{key} holds {value!r}, not a number. Nothing was moved.")
            plan.sequences[bucket] = int(value)
            if bucket >= buckets:
                plan.gone.append(key)
        elif bucket != 0:  # attempt_markers: one, in bucket 0
            raise SchemaError(f"{key} is not in bucket 0, where the layout keeps it.")
    targets = [target for _source, target, _kind in plan.renames]
    if targets:
        taken = await db.run_batch([("EXISTS", key) for key in targets])
        for key, exists in zip(targets, taken, strict=True):
            if int(exists):
                raise SchemaError(f"{key} exists already; nothing was moved.")
    if (plan.renames or plan.members) and isinstance(db.client, RedisCluster):
        raise SchemaError(
            "Submissions' markers and receipts must move into other buckets, which are other "
            "slots: migrate on a standalone server, then import the store. Nothing was moved."
        )
    return plan
