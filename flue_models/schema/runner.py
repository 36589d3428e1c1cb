"""The migration runner: where each set stands, and bringing the store up to date.

Example:
    ```python
    for step in await migrate(db):
        print(step.direction, step.file.label)
    ```
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flue_models.connection import Database
from flue_models.errors import (
    ConfigurationError,
    MigrationChecksumError,
    MigrationFailedError,
    MigrationFileError,
    SchemaTooNewError,
    UnversionedDataError,
)
from flue_models.replies import reply_text
from flue_models.schema.context import MigrationContext
from flue_models.schema.files import BUILTIN_SET, MigrationFile, MigrationSet, version_field
from flue_models.schema.lock import LOCK_WAIT_SECONDS, MigrationLock


@dataclass
class SetStatus:
    """Where one migration set stands.

    Example:
        ```python
        for status in await schema_status(db):
            print(status.name, status.stored, status.newest, status.pending)
        ```
    """

    name: str
    stored: int
    newest: int
    pending: list[MigrationFile]
    drift: list[str]


@dataclass(frozen=True)
class Step:
    """One migration applied (``up``) or reverted (``down``) by :func:`migrate`.

    Example:
        ```python
        for step in await migrate(db):
            print(step.direction, step.file.label, step.seconds)
        ```
    """

    file: MigrationFile
    direction: str
    seconds: float = 0.0


def _all_sets(sets: Sequence[MigrationSet]) -> list[MigrationSet]:
    ordered = [MigrationSet.builtin()]
    for extra in sets:
        if extra.name == BUILTIN_SET:
            raise ConfigurationError(
                f"The migration set name {BUILTIN_SET!r} belongs to flue-models itself; give "
                "your set another name."
            )
        if extra.name in {s.name for s in ordered}:
            raise ConfigurationError(f"Two migration sets are named {extra.name!r}.")
        ordered.append(extra)
    return ordered


async def _read_versions(db: Database, sets: list[MigrationSet]) -> list[int]:
    replies = await db.client.hmget(db.keys.meta, [s.version_field for s in sets])
    return [int(reply_text(v)) if v is not None else 0 for v in replies]


async def schema_status(
    db: Database,
    sets: Sequence[MigrationSet] = (),
    *,
    files: dict[str, list[MigrationFile]] | None = None,
) -> list[SetStatus]:
    """Report each set's stored version, newest file, pending files and checksum drift.

    Example:
        ```python
        statuses = await schema_status(db, [MigrationSet("billing", "./migrations")])
        ```
    """
    ordered = _all_sets(sets)
    loaded = files or {s.name: s.files() for s in ordered}
    versions = await _read_versions(db, ordered)
    record = {
        reply_text(k): reply_text(v) for k, v in (await db.client.hgetall(db.keys.meta)).items()
    }
    statuses = []
    for migration_set, stored in zip(ordered, versions, strict=True):
        set_files = loaded[migration_set.name]
        drift = []
        for file in set_files[:stored]:
            applied = record.get(f"applied:{file.set_name}:{file.number:04d}")
            if applied is not None and json.loads(applied).get("checksum") != file.checksum:
                drift.append(file.label)
        statuses.append(
            SetStatus(
                name=migration_set.name,
                stored=stored,
                newest=len(set_files),
                pending=set_files[stored:],
                drift=drift,
            )
        )
    return statuses


async def migrate(
    db: Database,
    sets: Sequence[MigrationSet] = (),
    *,
    to: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    lock_wait: float = LOCK_WAIT_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> list[Step]:
    """Bring the store to the newest schema of every set (the built-in set first).

    Args:
        db: the database to migrate.
        sets: the application's migration sets, applied after the built-in one.
        to: stop the last set at this number; below the stored version, its files'
            ``down`` functions run, newest first.
        dry_run: report what would run, write nothing.
        force: accept applied files whose checksum changed.
        lock_wait: seconds to wait for another process's migration.
        progress: called with a line of text as each file starts and as batches of
            records are done (the command line shows it on a terminal).

    Raises:
        SchemaTooNewError: a stored version is newer than the newest file of its set.
        UnversionedDataError: keys exist under the prefix but no schema record does.
        MigrationChecksumError: an applied file changed (unless ``force``).
        MigrationLockError: another process held the lock for over ``lock_wait``.
        MigrationFailedError: a file's ``up`` or ``down`` raised (its cause is chained).

    Example:
        ```python
        for step in await migrate(db):
            print(step.direction, step.file.label)
        ```
    """
    ordered = _all_sets(sets)
    files = {s.name: s.files() for s in ordered}

    # First command of all: refuse a newer schema before reading anything else.
    versions = await _read_versions(db, ordered)
    for migration_set, stored in zip(ordered, versions, strict=True):
        if stored > len(files[migration_set.name]):
            raise SchemaTooNewError(
                migration_set.name,
                stored=stored,
                newest=len(files[migration_set.name]),
                prefix=db.keys.prefix,
            )
    lock = MigrationLock(db)
    if not await db.client.exists(db.keys.meta):
        async for key in db.client.scan_iter(match=db.keys.pattern(), count=1000):
            if reply_text(key) != lock.key:  # another process may be creating the record now
                raise UnversionedDataError(db.keys.prefix, reply_text(key), db.keys.meta)

    statuses = await schema_status(db, sets, files=files)
    drift = [label for status in statuses for label in status.drift]
    if drift and not force:
        raise MigrationChecksumError(drift)
    plan = _plan(ordered, files, versions, to)
    if not plan or dry_run:
        return plan

    await lock.acquire(db, lock_wait)
    try:
        versions = await _read_versions(db, ordered)  # another process may have migrated
        steps = []
        for step in _plan(ordered, files, versions, to):
            steps.append(await _apply(db, lock, step, progress))
        return steps
    finally:
        await lock.release(db)


def _plan(
    ordered: list[MigrationSet],
    files: dict[str, list[MigrationFile]],
    versions: list[int],
    to: int | None,
) -> list[Step]:
    steps: list[Step] = []
    for position, (migration_set, stored) in enumerate(zip(ordered, versions, strict=True)):
        set_files = files[migration_set.name]
        target = len(set_files)
        if to is not None and position == len(ordered) - 1:
            if not 0 <= to <= len(set_files):
                raise ConfigurationError(
                    f"Cannot migrate {migration_set.name!r} to {to}: its files go from 1 to "
                    f"{len(set_files)}."
                )
            target = to
        if target >= stored:
            steps += [Step(f, "up") for f in set_files[stored:target]]
        else:
            for file in reversed(set_files[target:stored]):
                if file.down is None:
                    raise MigrationFileError(
                        f"{file.label} has no `async def down(ctx)`, so {migration_set.name!r} "
                        f"cannot go below version {file.number}."
                    )
                steps.append(Step(file, "down"))
    return steps


async def _apply(
    db: Database, lock: MigrationLock, step: Step, progress: Callable[[str], None] | None
) -> Step:
    file = step.file
    migration_set_field = version_field(file.set_name)
    action = file.up if step.direction == "up" else file.down
    assert action is not None
    started = time.monotonic()
    try:
        if progress is not None:
            progress(f"{'applying' if step.direction == 'up' else 'reverting'} {file.label}")
        with db.span("migrate", None, **{"flue.migration.file": file.label}):
            await action(MigrationContext(db, file, lock, progress))
    except Exception as exc:
        before = file.number - 1 if step.direction == "up" else file.number
        raise MigrationFailedError(file.set_name, file.number, file.name, before) from exc
    record = {reply_text(k) for k in await db.client.hkeys(db.keys.meta)}
    cursors = [f for f in record if f.startswith(f"cursor:{file.set_name}:{file.number:04d}:")]
    applied_field = f"applied:{file.set_name}:{file.number:04d}"
    if step.direction == "up":
        entry = {
            "name": file.name,
            "checksum": file.checksum,
            "at": (await db.server_time()).isoformat(),
        }
        values = {migration_set_field: str(file.number), applied_field: json.dumps(entry)}
        await lock.record(db, values, cursors)
    else:
        await lock.record(
            db, {migration_set_field: str(file.number - 1)}, [applied_field, *cursors]
        )
    return Step(file, step.direction, time.monotonic() - started)
