"""Migration files: numbered ``NNNN_name.py`` modules grouped in named sets.

Example:
    ```python
    for file in MigrationSet("billing", "./migrations").files():
        print(file.label, file.description)
    ```
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from flue_models.errors import ConfigurationError, MigrationFileError

if TYPE_CHECKING:
    from flue_models.schema.context import MigrationContext

#: Name of the built-in migration set; its version is the record's ``schema_version``.
BUILTIN_SET = "flue"
#: The version of the stored layout: the number of the built-in set's one file. Until the
#: first release the layout is that one file, changed in place; a change of the stored
#: format renames it to the next number, so older stores are refused, never misread.
LAYOUT_VERSION = 10
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.py$")
_SET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def version_field(set_name: str) -> str:
    """Return the field of ``<prefix>::meta`` that holds a set's version.

    Example:
        >>> version_field("flue"), version_field("billing")
        ('schema_version', 'schema_version:billing')
    """
    return "schema_version" if set_name == BUILTIN_SET else f"schema_version:{set_name}"


def builtin_directory() -> Path:
    """Return the folder of flue-models' own migrations (the wheel's or the checkout's).

    Example:
        >>> (builtin_directory() / "0010_layout.py").is_file()
        True
    """
    spec = importlib.util.find_spec("flue_models._migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"  # a checkout on sys.path


@dataclass(frozen=True)
class MigrationFile:
    """One ``NNNN_name.py`` file of a migration set.

    Example:
        ```python
        first = MigrationSet.builtin().files()[0]
        first.number, first.name   # (9, 'layout')
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
            MigrationSet.builtin().files()[0].label   # 'flue/0010_layout'
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


#: Migration modules loaded so far, by set, path and the SHA-256 of the text they run:
#: every ``connect()`` lists and checks the files, but runs a file's text once per
#: process (an edited file has another digest, so it is loaded again).
_LOADED: dict[tuple[str, Path, str], ModuleType] = {}


def _load_module(set_name: str, path: Path) -> tuple[ModuleType, str]:
    """Return a migration file's module and the SHA-256 of its text, running the text
    it was hashed from (one read: never a bytecode cache of another version, which a
    file rewritten at the same size within a second would meet)."""
    text = path.read_bytes()
    checksum = hashlib.sha256(text).hexdigest()
    module = _LOADED.get((set_name, path, checksum))
    if module is None:
        module_name = f"flue_models_migration_{set_name}_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise MigrationFileError(f"Cannot load migration file {path}.")
        module = importlib.util.module_from_spec(spec)
        exec(compile(text, str(path), "exec"), module.__dict__)
        _LOADED[(set_name, path, checksum)] = module
    return module, checksum


@dataclass(frozen=True)
class MigrationSet:
    """A named folder of numbered migration files, recorded under its own version.

    Args:
        name: the set's name (``flue`` is the built-in set's).
        directory: the folder holding ``0001_<name>.py``, ``0002_<name>.py``, ...
        first: the number of the set's first file (1; the built-in set's one file is
            numbered by the layout version, :data:`LAYOUT_VERSION`). A stored version
            between 1 and ``first - 1`` is a layout this installation refuses.

    Example:
        ```python
        async with fm.connect(migrations=[MigrationSet("billing", "./migrations")]) as db:
            ...
        ```
    """

    name: str
    directory: Path | str
    first: int = 1

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
        return cls(BUILTIN_SET, builtin_directory(), first=LAYOUT_VERSION)

    @property
    def version_field(self) -> str:
        """The field of ``<prefix>::meta`` holding this set's version.

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
        for expected, number in enumerate(numbers, start=self.first):
            if number != expected:
                raise MigrationFileError(
                    f"A gap in {directory}: no file numbered {expected:04d} before "
                    f"{by_number[number][0].name}. Numbers start at {self.first:04d} and go "
                    "up by one."
                )
        files = []
        for number in numbers:
            path = by_number[number][0]
            module, checksum = _load_module(self.name, path)
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
                    checksum=checksum,
                    description=description.strip().splitlines()[0] if description else "",
                    module=module,
                )
            )
        return files


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
