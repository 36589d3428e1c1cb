"""End the prefix with ``::`` in every key name, so nested prefixes never meet.

Before: ``<prefix>:<rest>``, so the keys (and the SCAN pattern) of prefix ``app`` also
matched those of ``app:prod``. After: ``<prefix>::<rest>``, and a prefix may not contain
``::``. This file renames every key of this prefix from the old form to the new one,
the schema record included. It leaves alone the keys of nested prefixes: those already in
the new layout (``app:prod::...``) and those of an old-layout store that has its own
schema record (``app:prod:meta``).

Checked before the first write: no new name may exist yet. Idempotent: a rerun after a
failure moves what is left. Stop processes of older flue-models versions first: after the
move they refuse the prefix (they find keys but no record where they look for it).
"""

from flue_models.errors import MigrationFileError
from flue_models.keys import SEPARATOR, escape_glob
from flue_models.replies import reply_text
from flue_models.schema import MigrationContext

#: Keys renamed per round trip.
BATCH = 500


async def up(ctx: MigrationContext) -> None:
    """Rename ``<prefix>:<rest>`` to ``<prefix>::<rest>`` for every key of this prefix."""
    db, keys = ctx.db, ctx.db.keys
    legacy_head = f"{keys.prefix}:"
    candidates: list[str] = []
    async for raw in db.client.scan_iter(match=escape_glob(legacy_head) + "*", count=1000):
        key = raw.decode("utf-8", "surrogateescape")
        if SEPARATOR not in key:  # new-layout keys (ours, or a nested prefix's) stay
            candidates.append(key)
    nested = set()
    for key in candidates:  # old-layout nested stores: "<prefix>:<x>:meta" records
        if key.endswith(":meta") and key != keys.legacy_meta:
            kind = reply_text(await db.client.type(key))
            if kind == "hash" and await db.client.hexists(key, "schema_version"):
                nested.add(key[: -len("meta")])
    lock = f"{keys.legacy_meta}:lock"
    moves = [
        (key, keys.head + key[len(legacy_head) :])
        for key in sorted(candidates)
        if key != lock and not any(key.startswith(n) for n in nested)
    ]
    for start in range(0, len(moves), BATCH):  # nothing is overwritten: check it all first
        part = moves[start : start + BATCH]
        taken = await db.run_batch([("EXISTS", new) for _old, new in part])
        clash = [new for (_old, new), there in zip(part, taken, strict=True) if there]
        if clash:
            raise MigrationFileError(
                f"{clash[0]} exists in both layouts; nothing was moved. Find which of it and "
                f"{clash[0].replace(SEPARATOR, ':', 1)} is current, remove the other, rerun."
            )
    moved = 0
    for start in range(0, len(moves), BATCH):
        part = moves[start : start + BATCH]
        replies = await db.run_batch(
            [("RENAME", old, new) for old, new in part], return_errors=True
        )  # a key gone since the scan ("no such key") was removed meanwhile
        moved += sum(1 for reply in replies if not isinstance(reply, Exception))
        ctx.report(f"{moved} of {len(moves)} keys moved")
    if nested:
        ctx.report(f"left alone the nested prefixes {sorted(n.rstrip(':') for n in nested)}")
