"""Give every key a Redis Cluster hash tag, so each write stays in one slot.

Before: ``<prefix>::<collection>:<id>``, ``<prefix>::<collection>:all``, ...,
``<prefix>::stream:<path>``, ``<prefix>::meta``. After: a collection's keys share the tag
of its bucket (``<prefix>::{<collection>:0}:<id>``, ``...{<collection>:0}:all``), each
stream has a tag of its own (``<prefix>::{stream:<path>}:events``), the closed streams are
``<prefix>::{stream}/closed`` and the schema record ``<prefix>::{meta}``. Every record's
``_owned`` (the index entries it holds, named relative to the prefix) is rewritten to the
new names before the record moves.

Checked before the first write: every key is one of the layout (else nothing moves), no
new name exists yet, and no other flue-models client is connected to this prefix (their
connections carry its name: stop them first; older versions' connections, which do not
name their prefix, count too). Idempotent and resumable: a rerun after a failure moves
what is left (moved keys already have their tag, and rewriting ``_owned`` twice changes
nothing). The schema record moves last. Run it on a standalone server: a cluster cannot
rename a key into another slot.
"""

from __future__ import annotations

import json
import re

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from flue_models.errors import CommandError, MigrationFileError, SchemaError, WritersActiveError
from flue_models.keys import KeySpace, encode_segment
from flue_models.model.spec import OWNED_FIELD
from flue_models.replies import reply_text
from flue_models.schema import MigrationContext

#: Keys read, rewritten or renamed per round trip.
BATCH = 500

_COLLECTION_KEY = re.compile(r"^([a-z][a-z0-9_]{0,63})([:/].*)$")
_STREAM_KEY = re.compile(r"^stream:([A-Za-z0-9_-]*)(:.*)?$")


def new_name(flat: KeySpace, tagged: KeySpace, key: str) -> str:
    """The name of ``key`` (a key of the layout before this file) in the tagged layout.

    Raises:
        MigrationFileError: ``key`` is not a key of that layout.

    Example:
        >>> new_name(KeySpace("p", tagged=False), KeySpace("p"), "p::ticket:all")
        'p::{ticket:0}:all'
    """
    rest = key[len(flat.head) :]
    if rest == "meta":
        return tagged.meta
    if rest == "stream/closed":
        return tagged.closed_streams()
    stream = _STREAM_KEY.match(rest)
    if stream:
        return f"{tagged.head}{{stream:{stream[1]}}}{stream[2] or ''}"
    found = _COLLECTION_KEY.match(rest)
    if not key.startswith(flat.head) or not found:
        raise MigrationFileError(
            f"{key!r} is not a key of the layout flue-models wrote; nothing was moved. "
            "Remove it or move it out of the prefix, then migrate again."
        )
    return tagged.record_prefix(found[1])[:-1] + found[2]


def new_owned(flat: KeySpace, tagged: KeySpace, raw: bytes) -> bytes | None:
    """``_owned`` with its keys renamed (``None``: unreadable, left for ``verify``).

    Example:
        >>> new_owned(KeySpace("p", tagged=False), KeySpace("p"), b'{"u":{},"z":{"t:all":1}}')
        b'{"u":{},"z":{"{t:0}:all":1}}'
    """
    try:
        owned = json.loads(raw)
        renamed = {
            part: {_relative(flat, tagged, key): value for key, value in owned[part].items()}
            for part in ("u", "z")
        }
    except (ValueError, KeyError, TypeError, AttributeError, MigrationFileError):
        return None
    return json.dumps(renamed, sort_keys=True, separators=(",", ":")).encode()


def _relative(flat: KeySpace, tagged: KeySpace, key: str) -> str:
    if key.startswith("{"):  # renamed by an earlier run
        return key
    return tagged.relative(new_name(flat, tagged, flat.absolute(key)))


async def up(ctx: MigrationContext) -> None:
    """Rename every key of this prefix into the tagged layout."""
    db = ctx.db
    flat, tagged = KeySpace(db.keys.prefix, tagged=False), KeySpace(db.keys.prefix)
    left_alone = {flat.meta, flat.migration_lock}
    found = []
    async for raw in db.client.scan_iter(match=flat.pattern(), count=1000):
        key = reply_text(raw)
        if not key.startswith(tagged.head + "{") and key not in left_alone:
            found.append(key)
    moves = [(key, new_name(flat, tagged, key)) for key in sorted(found)]
    if await db.client.exists(flat.meta):  # the record moves last
        moves.append((flat.meta, tagged.meta))
    if len(moves) <= 1:
        return  # an empty store: only the record to move (or already moved)
    if isinstance(db.client, RedisCluster):
        raise MigrationFileError(
            "This store is in the layout before hash tags, on a cluster: its keys cannot be "
            "renamed into their slots here. Move it to a standalone server, migrate it "
            "there, then import it (see the Redis Cluster page). Nothing was moved."
        )
    await _refuse_other_clients(ctx)
    for start in range(0, len(moves), BATCH):  # nothing is overwritten: check it all first
        part = moves[start : start + BATCH]
        taken = await db.run_batch([("EXISTS", new) for _old, new in part])
        clash = [new for (_old, new), there in zip(part, taken, strict=True) if there]
        if clash:
            raise MigrationFileError(
                f"{clash[0]} exists in both layouts; nothing was moved. Find which copy is "
                "current, remove the other, and migrate again."
            )
    records = [key for key, _new in moves if _is_record(flat, key)]
    unreadable = await _rewrite_owned(ctx, flat, tagged, records)
    moved = 0
    for start in range(0, len(moves), BATCH):
        part = moves[start : start + BATCH]
        replies = await db.run_batch(
            [("RENAME", old, new) for old, new in part], return_errors=True
        )  # a key gone since the scan ("no such key") was removed meanwhile
        moved += sum(1 for reply in replies if not isinstance(reply, Exception))
        ctx.report(f"{moved} of {len(moves)} keys moved")
    if unreadable:
        ctx.report(f"{unreadable} record(s) with an unreadable {OWNED_FIELD}: run verify --repair")


def _is_record(flat: KeySpace, key: str) -> bool:
    found = _COLLECTION_KEY.match(key[len(flat.head) :])
    return bool(found) and flat.classify(found[1], key) == "record"


async def _rewrite_owned(
    ctx: MigrationContext, flat: KeySpace, tagged: KeySpace, records: list[str]
) -> int:
    """Rename the keys each record's ``_owned`` lists, in place (before the move)."""
    unreadable = 0
    for start in range(0, len(records), BATCH):
        part = records[start : start + BATCH]
        owned = await ctx.db.run_batch([("HGET", key, OWNED_FIELD) for key in part])
        writes = []
        for key, raw in zip(part, owned, strict=True):
            if raw is None:
                continue
            renamed = new_owned(flat, tagged, raw)
            if renamed is None:
                unreadable += 1
            elif renamed != raw:
                writes.append(("HSET", key, OWNED_FIELD, renamed))
        if writes:
            await ctx.db.run_batch(writes)
    return unreadable


async def _refuse_other_clients(ctx: MigrationContext) -> None:
    """Refuse while another flue-models client may write this prefix (see the docstring)."""
    db = ctx.db
    try:
        clients = await db.client.execute_command("CLIENT LIST")
    except CommandError as exc:
        if not isinstance(exc.__cause__, NoPermissionError):
            raise
        raise SchemaError(
            "Moving a store into the tagged key layout checks that no other process uses "
            "it (CLIENT LIST), which this user may not run; migrate as a user that may, "
            "with the store's writers stopped."
        ) from exc
    own = db.client_name
    mine = encode_segment(db.keys.prefix)
    others = []
    for client in clients:
        name = str(client.get("name", ""))
        parts = name.split(":")
        if parts[0] != "flue-models" or name == own:
            continue
        if len(parts) < 3 or parts[2] == mine:  # an older version names no prefix
            others.append(f"{client.get('addr')} {name}")
    if others:
        raise WritersActiveError(db.keys.prefix, others)
