"""Move each workflow run's event stream into its run's bucket (its Cluster slot).

A run's stream ``runs/<id>`` was in a slot of its own (``{stream:<path>}``), so ending a
run and closing its stream were two steps. Its keys become keys of the run's bucket
(``{workflow_run:<k>}/stream:<id>``, ``/events:``, ``/once:``, ``/chunks:``), so one
``MULTI`` starts a run with its stream and ends it with the close. Other streams stay.

Checked before the first move: every key of a run's stream is one of a stream's, none of
the keys it moves to exists, and, when streams move, no other flue-models client is
connected to the prefix and the server is not a cluster (migrate on a standalone server,
then import). Each stream moves in one atomic call: idempotent and resumable. ``down``
moves them back.
"""

from redis.asyncio.cluster import RedisCluster

from flue_models.connection import Database
from flue_models.errors import SchemaError
from flue_models.keys import decode_segment, encode_segment
from flue_models.replies import reply_text
from flue_models.schema import MigrationContext
from flue_models.schema.split import refuse_other_clients
from flue_models.state.events import HOMED_NAMES, chunks_key, stream_keys
from flue_models.state.run import RUN_STREAMS, WorkflowRun

#: A stream's keys in a slot of its own: the metadata, then these suffixes; their types.
SUFFIXES = ("", ":events", ":once", ":chunks")
TYPES = ("hash", "stream", "hash", "hash")
SPEC = WorkflowRun.__flue_spec__


async def up(ctx: MigrationContext) -> None:
    """Move each run's stream into the bucket of its run."""
    db = ctx.db
    head = f"{db.keys.head}{{stream:"
    moves: dict[str, list[tuple[str, str, str]]] = {}
    async for raw in db.client.scan_iter(match=db.keys.stream_meta_pattern(), count=1000):
        key = reply_text(raw)
        segment, brace, suffix = key[len(head) :].partition("}")
        path = _path(segment)
        if path is None or not path.startswith(RUN_STREAMS) or path == RUN_STREAMS:
            continue  # not a run's stream (or not a stream's key at all): it stays
        if not brace or suffix not in SUFFIXES:
            raise SchemaError(f"{key} is not a key of a stream; nothing was moved.")
        targets = [*stream_keys(db.keys, path), chunks_key(db.keys, path)]
        kind = SUFFIXES.index(suffix)
        moves.setdefault(path, []).append((key, targets[kind], TYPES[kind]))
    await _move(ctx, moves, "into their runs' buckets")


async def down(ctx: MigrationContext) -> None:
    """Move each run's stream back into a slot of its own."""
    db = ctx.db
    moves: dict[str, list[tuple[str, str, str]]] = {}
    async for raw in db.client.scan_iter(match=db.keys.buckets_pattern(SPEC.collection)):
        key = reply_text(raw)
        bucket = db.keys.bucket_in_key(SPEC.collection, key)
        if bucket is None:
            continue
        owned = db.keys.in_bucket(bucket).owned_parts(SPEC.collection, key)
        if owned is None or owned[0] not in HOMED_NAMES:
            continue  # a row, an index, a counter
        name, segment = owned
        run_id = _path(segment)
        if run_id is None:
            raise SchemaError(f"{key} does not name a run; nothing was moved.")
        path = RUN_STREAMS + run_id
        own = db.keys.stream(path).meta
        kind = HOMED_NAMES.index(name)
        moves.setdefault(path, []).append((key, own + SUFFIXES[kind], TYPES[kind]))
    await _move(ctx, moves, "back into slots of their own")


def _path(segment: str) -> str | None:
    try:
        text = decode_segment(segment).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if encode_segment(text) == segment else None


async def _move(
    ctx: MigrationContext, moves: dict[str, list[tuple[str, str, str]]], where: str
) -> None:
    """Check everything, then move each stream's keys in one atomic call."""
    db: Database = ctx.db
    if moves:
        if isinstance(db.client, RedisCluster):
            raise SchemaError(
                f"{len(moves)} run stream(s) must move into other slots, which a cluster "
                "refuses: migrate on a standalone server, then import the store into the "
                "cluster. Nothing was moved."
            )
        await refuse_other_clients(db)
    targets = [new for pairs in moves.values() for _old, new, _type in pairs]
    for start in range(0, len(targets), 500):
        part = targets[start : start + 500]
        found = await db.run_batch([("EXISTS", key) for key in part])
        taken = [key for key, there in zip(part, found, strict=True) if there]
        if taken:
            raise SchemaError(
                f"{taken[0]} exists already, where a run's stream would move: find which "
                "copy is current and remove the other, then migrate again. Nothing was moved."
            )
    for path in sorted(moves):
        keys = [key for old, new, _type in moves[path] for key in (old, new)]
        types = [kind for _old, _new, kind in moves[path]]
        reply = await db.scripts.call("keys_move", keys=keys, args=types, any_slots=True)
        if reply_text(reply[0]) != "moved":
            raise SchemaError(f"{reply_text(reply[1])} exists: {path} was not moved.")
    ctx.report(f"{len(moves)} run stream(s) moved {where}")
