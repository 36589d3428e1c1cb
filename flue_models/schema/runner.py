"""The migration runner: where each set stands, and bringing the store up to date.

Example:
    ```python
    for step in await migrate(db):
        print(step.direction, step.file.label)
    ```
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flue_models.connection import Database
from flue_models.errors import (
    BatchCommandError,
    ConfigurationError,
    ForeignSchemaError,
    MigrationFailedError,
    MigrationFileError,
    SchemaLayoutError,
    SchemaMissingError,
    SchemaTooNewError,
)
from flue_models.replies import reply_pairs, reply_text
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
    #: The set's files the stored version covers, oldest first.
    applied: list[MigrationFile] = dataclasses.field(default_factory=list)


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


#: The fields of the schema record this library writes (see the module docstring).
_OWN_FIELD = re.compile(
    r"^(schema_version(:[a-z][a-z0-9_]{0,31})?"
    r"|applied:[a-z][a-z0-9_]{0,31}:\d{4}"
    r"|cursor:[a-z][a-z0-9_]{0,31}:\d{4}:.+"
    r"|buckets:[a-z][a-z0-9_]{0,63}"
    r"|partition:[a-z][a-z0-9_]{0,63})$"
)


async def read_record(db: Database) -> dict[str, str]:
    """Read the schema record (``{}`` when there is none), refusing anything foreign.

    Raises:
        ForeignSchemaError: the key is not a hash, or holds a field this library does
            not write (another tool's stamp).

    Example:
        ```python
        record = await read_record(db)   # {'schema_version': '10', 'applied:flue:0010': ...}
        ```
    """
    key = db.keys.meta
    try:  # one round trip; HGETALL is refused when the key is not a hash
        _kind, raw = await db.run_batch([("TYPE", key), ("HGETALL", key)])
    except BatchCommandError as exc:
        kind = reply_text(exc.results[0])
        raise ForeignSchemaError.stamp(key, "(the key itself)", f"a {kind}") from exc
    record = reply_pairs(raw)
    for field, value in sorted(record.items()):
        if not _OWN_FIELD.match(field):
            raise ForeignSchemaError.stamp(key, field, value)
    return record


def _parse_versions(db: Database, record: dict[str, str], ordered: list[MigrationSet]) -> list[int]:
    """Each set's stored version (0: none), refusing one that is not a number."""
    versions = []
    for migration_set in ordered:
        text = record.get(migration_set.version_field, "0")
        if not text.isdigit():
            raise ForeignSchemaError.not_a_version(db.keys.meta, migration_set.version_field, text)
        versions.append(int(text))
    return versions


def _stored_versions(
    db: Database,
    record: dict[str, str],
    ordered: list[MigrationSet],
    files: dict[str, list[MigrationFile]],
) -> list[int]:
    """Each set's stored version, refusing an unparsable one or one newer than its files."""
    versions = _parse_versions(db, record, ordered)
    for migration_set, stored in zip(ordered, versions, strict=True):
        newest = _newest(files[migration_set.name])
        if stored > newest:
            raise SchemaTooNewError(
                migration_set.name, stored=stored, newest=newest, prefix=db.keys.prefix
            )
        if 0 < stored < migration_set.first:  # the built-in set: an older layout
            raise SchemaLayoutError.older(db.keys.prefix, stored, migration_set.first)
    return versions


def _newest(set_files: list[MigrationFile]) -> int:
    """The number of a set's newest file (0: it has none)."""
    return set_files[-1].number if set_files else 0


async def _refuse_unversioned(db: Database) -> None:
    """Refuse a prefix holding keys but no schema record (this library's own meta and lock
    keys do not count)."""
    own = {db.keys.meta, db.keys.migration_lock}
    async for raw in db.client.scan_iter(match=db.keys.pattern(), count=1000):
        if reply_text(raw) not in own:
            raise ForeignSchemaError.unversioned(db.keys.prefix, reply_text(raw), db.keys.meta)


async def check_schema(
    db: Database, sets: Sequence[MigrationSet] = (), *, record: dict[str, str] | None = None
) -> None:
    """Refuse to use a store whose record is missing, foreign, unparsable or too new.

    What ``connect(migrate=False)`` runs instead of :func:`migrate`: it reads, never writes.
    ``record``: the schema record as :func:`read_record` just returned it (``connect()``
    reads it once for this and the bucket check); omitted, it is read here.

    Raises:
        SchemaMissingError: the prefix was never migrated.
        ForeignSchemaError, SchemaTooNewError, SchemaLayoutError: as in :func:`migrate`.

    Example:
        ```python
        await check_schema(db)
        ```
    """
    ordered = _all_sets(sets)
    if record is None:
        record = await read_record(db)
    if not record:
        raise SchemaMissingError(db.keys.prefix, db.keys.meta)
    _stored_versions(db, record, ordered, {s.name: s.files() for s in ordered})


async def schema_status(db: Database, sets: Sequence[MigrationSet] = ()) -> list[SetStatus]:
    """Report each set's stored version, newest file, pending files and checksum drift.

    Example:
        ```python
        statuses = await schema_status(db, [MigrationSet("billing", "./migrations")])
        ```
    """
    ordered = _all_sets(sets)
    record = await read_record(db)
    return _statuses(db, record, ordered, {s.name: s.files() for s in ordered})


def _statuses(
    db: Database,
    record: dict[str, str],
    ordered: list[MigrationSet],
    loaded: dict[str, list[MigrationFile]],
) -> list[SetStatus]:
    """Each set's status from a schema record already read (no I/O).

    The built-in set's one file is changed in place until the first release (its number,
    not its text, names the layout), so only the application sets' files are checked for
    drift."""
    versions = _parse_versions(db, record, ordered)
    statuses = []
    for migration_set, stored in zip(ordered, versions, strict=True):
        set_files = loaded[migration_set.name]
        applied = [file for file in set_files if file.number <= stored]
        drift = []
        for file in applied if migration_set.name != BUILTIN_SET else ():
            entry = record.get(f"applied:{file.set_name}:{file.number:04d}")
            if entry is not None and json.loads(entry).get("checksum") != file.checksum:
                drift.append(file.label)
        statuses.append(
            SetStatus(
                name=migration_set.name,
                stored=stored,
                newest=_newest(set_files),
                pending=[file for file in set_files if file.number > stored],
                drift=drift,
                applied=applied,
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
    record: dict[str, str] | None = None,
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
        record: the schema record as :func:`read_record` just returned it (``connect()``
            reads it once for this and the bucket check); omitted, it is read here. It
            only decides whether there is work: the lock's holder reads it again.

    Raises:
        SchemaTooNewError: a stored version is newer than the newest file of its set.
        SchemaLayoutError: the store is in an older, pre-release layout of flue-models.
        ForeignSchemaError: a stored version is not a number, the record holds fields
            this library does not write, or keys exist under the prefix but no schema
            record does.
        MigrationFileError: an applied file changed (unless ``force``).
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

    # First command of all: refuse a foreign, unparsable or newer stamp before anything else.
    if record is None:
        record = await read_record(db)
    versions = _stored_versions(db, record, ordered, files)
    if dry_run and not record:
        await _refuse_unversioned(db)

    statuses = _statuses(db, record, ordered, files)
    drift = [label for status in statuses for label in status.drift]
    if drift and not force:
        raise MigrationFileError.changed(drift)
    plan = _plan(ordered, files, versions, to)
    if not plan or dry_run:
        return plan

    lock = MigrationLock(db)
    await lock.acquire(db, lock_wait)
    try:
        record = await read_record(db)  # another process may have migrated meanwhile
        versions = _stored_versions(db, record, ordered, files)
        if not record:  # decided under the lock: nobody else can be stamping it now
            await _refuse_unversioned(db)
        return [
            await _apply(db, lock, step, progress) for step in _plan(ordered, files, versions, to)
        ]
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
        target = _newest(set_files)
        if to is not None and position == len(ordered) - 1:
            if to != 0 and to not in {file.number for file in set_files}:
                raise ConfigurationError(
                    f"Cannot migrate {migration_set.name!r} to {to}: its files go from "
                    f"{migration_set.first} to {target}."
                )
            target = to
        if target >= stored:
            steps += [Step(f, "up") for f in set_files if stored < f.number <= target]
        else:
            for file in reversed([f for f in set_files if target < f.number <= stored]):
                if file.down is None:
                    raise MigrationFileError(
                        f"{file.label} has no `async def down(ctx)`, so {migration_set.name!r} "
                        f"cannot go below version {file.number}."
                    )
                steps.append(Step(file, "down"))
    return steps


async def _apply(
    db: Database,
    lock: MigrationLock,
    step: Step,
    progress: Callable[[str], None] | None,
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
