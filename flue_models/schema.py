"""The schema record and the migration runner.

``<prefix>:meta`` holds, for each migration set, its ``schema_version`` (the built-in
set ``flue``) or ``schema_version:<set>`` (an application's set), and for every applied
file ``applied:<set>:<NNNN>`` = ``{"name", "checksum", "at"}``. A numbered folder of
``NNNN_name.py`` files moves the stored layout forward; a store written by a newer
schema, or a prefix holding keys but no record, is refused before anything is written.

Example:
    ```python
    applied = await migrate(db, [MigrationSet("billing", "./migrations")])
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import inspect
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from flue_models.connection import Database
from flue_models.errors import (
    ConfigurationError,
    MigrationChecksumError,
    MigrationFailedError,
    MigrationFileError,
    MigrationLockError,
    SchemaTooNewError,
    UnversionedDataError,
)
from flue_models.model.base import Model
from flue_models.model.query import Page
from flue_models.model.verify import scan_collection
from flue_models.replies import reply_hash, reply_text

#: Name of the built-in migration set; its version is the record's ``schema_version``.
BUILTIN_SET = "flue"
#: Lock time to live; the holder renews it every third of this while it runs.
LOCK_TTL_MS = 30_000
#: How long a start-up waits for another process's migration before giving up.
LOCK_WAIT_SECONDS = 60.0

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.py$")
_SET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def version_field(set_name: str) -> str:
    """Return the field of ``<prefix>:meta`` that holds a set's version.

    Example:
        >>> version_field("flue"), version_field("billing")
        ('schema_version', 'schema_version:billing')
    """
    return "schema_version" if set_name == BUILTIN_SET else f"schema_version:{set_name}"


def builtin_directory() -> Path:
    """Return the folder of flue-models' own migrations (the wheel's or the checkout's).

    Example:
        >>> (builtin_directory() / "0001_initial.py").is_file()
        True
    """
    spec = importlib.util.find_spec("flue_models._migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "migrations"  # a checkout on sys.path


@dataclass(frozen=True)
class MigrationFile:
    """One ``NNNN_name.py`` file of a migration set.

    Example:
        ```python
        first = MigrationSet.builtin().files()[0]
        first.number, first.name   # (1, 'initial')
        ```
    """

    set_name: str
    number: int
    name: str
    path: Path
    checksum: str
    description: str
    module: ModuleType = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """``<set>/<NNNN>_<name>``, as messages show it.

        Example:
            ```python
            MigrationSet.builtin().files()[0].label   # 'flue/0001_initial'
            ```
        """
        return f"{self.set_name}/{self.number:04d}_{self.name}"

    @property
    def up(self) -> Callable[[MigrationContext], Awaitable[None]]:
        """The file's ``async def up(ctx)``.

        Example:
            ```python
            await file.up(ctx)
            ```
        """
        function: Callable[[MigrationContext], Awaitable[None]] = self.module.up
        return function

    @property
    def down(self) -> Callable[[MigrationContext], Awaitable[None]] | None:
        """The file's ``async def down(ctx)``, or ``None`` when it has none.

        Example:
            ```python
            if file.down is not None:
                await file.down(ctx)
            ```
        """
        return getattr(self.module, "down", None)


def _load_module(set_name: str, path: Path) -> ModuleType:
    module_name = f"flue_models_migration_{set_name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MigrationFileError(f"Cannot load migration file {path}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class MigrationSet:
    """A named folder of numbered migration files, recorded under its own version.

    Args:
        name: the set's name (``flue`` is the built-in set's).
        directory: the folder holding ``0001_<name>.py``, ``0002_<name>.py``, ...

    Example:
        ```python
        async with fm.connect(migrations=[MigrationSet("billing", "./migrations")]) as db:
            ...
        ```
    """

    name: str
    directory: Path | str

    def __post_init__(self) -> None:
        if not _SET_NAME.match(self.name):
            raise ConfigurationError(
                f"Invalid migration set name {self.name!r}: use 1-32 lowercase letters, "
                "digits and '_', starting with a letter."
            )

    @classmethod
    def builtin(cls) -> MigrationSet:
        """Return flue-models' own migration set.

        Example:
            >>> MigrationSet.builtin().name
            'flue'
        """
        return cls(BUILTIN_SET, builtin_directory())

    @property
    def version_field(self) -> str:
        """The field of ``<prefix>:meta`` holding this set's version.

        Example:
            >>> MigrationSet("billing", ".").version_field
            'schema_version:billing'
        """
        return version_field(self.name)

    def files(self) -> list[MigrationFile]:
        """Load and check the set's files, in order.

        Raises:
            MigrationFileError: a name that is not ``NNNN_name.py``, two files with one
                number, a gap in the numbers, or a file without ``async def up(ctx)``.

        Example:
            ```python
            for file in MigrationSet("billing", "./migrations").files():
                print(file.number, file.name, file.description)
            ```
        """
        directory = Path(self.directory)
        if not directory.is_dir():
            raise MigrationFileError(f"Migration folder {directory} does not exist.")
        candidates = sorted(
            p for p in directory.iterdir() if p.suffix == ".py" and p.name != "__init__.py"
        )
        bad = [p.name for p in candidates if not _FILE_NAME.match(p.name)]
        if bad:
            raise MigrationFileError(
                f"Migration file name(s) {bad} in {directory} do not match NNNN_name.py "
                "(four digits, then lowercase letters, digits and '_')."
            )
        by_number: dict[int, list[Path]] = {}
        for path in candidates:
            match = _FILE_NAME.match(path.name)
            assert match is not None
            by_number.setdefault(int(match.group(1)), []).append(path)
        duplicates = {n: [p.name for p in ps] for n, ps in by_number.items() if len(ps) > 1}
        if duplicates:
            shown = "; ".join(f"{n:04d}: {names}" for n, names in sorted(duplicates.items()))
            raise MigrationFileError(f"Two files share one number in {directory}: {shown}.")
        numbers = sorted(by_number)
        for expected, number in enumerate(numbers, start=1):
            if number != expected:
                raise MigrationFileError(
                    f"A gap in {directory}: no file numbered {expected:04d} before "
                    f"{by_number[number][0].name}. Numbers start at 0001 and go up by one."
                )
        files = []
        for number in numbers:
            path = by_number[number][0]
            module = _load_module(self.name, path)
            up = getattr(module, "up", None)
            if up is None or not inspect.iscoroutinefunction(up):
                raise MigrationFileError(f"{path} has no `async def up(ctx)`.")
            description = getattr(module, "DESCRIPTION", None) or (module.__doc__ or "")
            files.append(
                MigrationFile(
                    set_name=self.name,
                    number=number,
                    name=path.stem.split("_", 1)[1],
                    path=path,
                    checksum=hashlib.sha256(path.read_bytes()).hexdigest(),
                    description=description.strip().splitlines()[0] if description else "",
                    module=module,
                )
            )
        return files


class MigrationContext:
    """What a migration's ``up(ctx)`` / ``down(ctx)`` receives.

    Attributes:
        db: the database being migrated (``ctx.db.client`` for raw commands).
        file: the migration file running.

    Example:
        ```python
        async def up(ctx: MigrationContext) -> None:
            async for batch in ctx.batches(Ticket):
                for ticket in batch:
                    ticket.priority = ticket.priority or 0
                await Ticket.save_many(batch, db=ctx.db)
        ```
    """

    def __init__(self, db: Database, file: MigrationFile, lock: _Lock) -> None:
        self.db = db
        self.file = file
        self._lock = lock

    def _cursor_field(self, label: str) -> str:
        return f"cursor:{self.file.set_name}:{self.file.number:04d}:{label}"

    async def batches(self, model: type[Model], size: int = 500) -> AsyncIterator[list[Any]]:
        """Yield the records of ``model`` in batches, resuming where a failed run stopped.

        After each batch is processed (when the next one is requested) its position is
        kept in the schema record, so a rerun after a failure skips the batches already
        done. The position is cleared when the migration completes.

        Example:
            ```python
            async for batch in ctx.batches(Ticket, size=200):
                await Ticket.save_many([t for t in batch if fix(t)], db=ctx.db)
            ```
        """
        cursor_field = self._cursor_field(model.__flue_spec__.collection)
        saved = await self.db.client.hget(self.db.keys.meta, cursor_field)
        cursor = reply_text(saved) if saved else None
        query = model.find().using(self.db)
        while True:
            page: Page[Any] = await query.page(limit=size, cursor=cursor)
            if page.items:
                yield page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
            await self._lock.record(self.db, {cursor_field: cursor}, [])

    async def rebuild_indexes(self, model: type[Model]) -> int:
        """Drop and rebuild every index of ``model``'s collection from its records.

        Idempotent: a rerun after a failure starts over and ends with the same indexes.
        Returns the number of records indexed.

        Example:
            ```python
            async def up(ctx: MigrationContext) -> None:
                await ctx.rebuild_indexes(Ticket)   # after adding Indexed() to a field
            ```
        """
        db = self.db
        spec = model.__flue_spec__
        found = await scan_collection(db, spec.collection)
        derived, records = found.indexes + found.uniques, found.records
        if derived:
            await db.client.delete(*derived)
        for start in range(0, len(records), 500):
            chunk = records[start : start + 500]
            replies = await db.run_batch([("HGETALL", key) for key in chunk])
            commands: list[tuple[Any, ...]] = []
            for key, raw in zip(chunk, replies, strict=True):
                if not raw:
                    continue  # deleted meanwhile
                record = model._from_hash(key, reply_hash(raw), db)
                for entry_key, score in record._flue_entries.items():
                    commands.append(("ZADD", entry_key, repr(score), record.id))
                for unique_key, value in record._flue_unique.items():
                    commands.append(("HSET", unique_key, value, record.id))
            if commands:
                await db.run_batch(commands)
        return len(records)


class _Lock:
    """The migration lock: ``SET NX PX``, renewed while held, released only by its owner."""

    def __init__(self, db: Database) -> None:
        self.key = f"{db.keys.meta}:lock"
        self.owner = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, db: Database, wait: float) -> None:
        deadline = time.monotonic() + wait
        delay = 0.05
        while not await db.client.set(self.key, self.owner, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise MigrationLockError(self.key, wait)
            await asyncio.sleep(delay)  # another process migrates: wait for it
            delay = min(delay * 2, 1.0)
        self._renewer = asyncio.create_task(self._renew(db))

    async def _renew(self, db: Database) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_MS / 3000)
            await db.scripts.call("lock_renew", keys=[self.key], args=[self.owner, LOCK_TTL_MS])

    async def release(self, db: Database) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await db.scripts.call("lock_release", keys=[self.key], args=[self.owner])

    async def record(self, db: Database, values: dict[str, str], remove: list[str]) -> None:
        """Write to the schema record, fenced on still holding the lock."""
        args: list[Any] = [self.owner, len(values)]
        for name, value in values.items():
            args += [name, value]
        args += [len(remove), *remove]
        if not await db.scripts.call("schema_record", keys=[db.keys.meta, self.key], args=args):
            raise MigrationLockError(self.key, LOCK_TTL_MS / 1000)


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
    lock = _Lock(db)
    if not await db.client.exists(db.keys.meta):
        async for key in db.client.scan_iter(match=db.keys.pattern(), count=1000):
            if reply_text(key) != lock.key:  # another process may be creating the record now
                raise UnversionedDataError(db.keys.prefix, reply_text(key))

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
            steps.append(await _apply(db, lock, step))
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


async def _apply(db: Database, lock: _Lock, step: Step) -> Step:
    file = step.file
    migration_set_field = version_field(file.set_name)
    action = file.up if step.direction == "up" else file.down
    assert action is not None
    started = time.monotonic()
    try:
        await action(MigrationContext(db, file, lock))
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


_TEMPLATE = '''"""{title}."""

from flue_models.schema import MigrationContext


async def up(ctx: MigrationContext) -> None:
    """Apply the change; keep it safe to run again after a failure.

    For example: `async for batch in ctx.batches(Model): ...` (resumable), or
    `await ctx.rebuild_indexes(Model)` after adding an index. Add an
    `async def down(ctx)` if the change can be undone.
    """
'''


def new_migration_file(directory: Path, name: str) -> Path:
    """Write the next numbered migration file of ``directory`` from a template.

    Raises:
        MigrationFileError: ``name`` is not lowercase letters, digits and ``_``, or the
            folder's files are malformed.

    Example:
        ```python
        path = new_migration_file(Path("migrations"), "add_priority")
        # migrations/0002_add_priority.py
        ```
    """
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise MigrationFileError(
            f"Migration name {name!r} must be lowercase letters, digits and '_' "
            "(e.g. add_priority)."
        )
    directory.mkdir(parents=True, exist_ok=True)
    existing = MigrationSet("new", directory).files()
    path = directory / f"{len(existing) + 1:04d}_{name}.py"
    path.write_text(_TEMPLATE.format(title=name.replace("_", " ").capitalize()))
    return path
