"""``flue-models migrate`` and ``flue-models migrations status|new``."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import flue_models
from flue_models.cli.output import FAILED, OK, UsageError, emit
from flue_models.cli.parser import MIGRATIONS_DIR_ENV
from flue_models.schema import (
    MigrationSet,
    builtin_directory,
    migrate,
    new_migration_file,
    schema_status,
)
from flue_models.startup import connect
from flue_models.terminal import Progress


def _sets(args: argparse.Namespace) -> list[MigrationSet]:
    return [MigrationSet(args.set, args.dir)] if args.dir else []


async def migrate_store(args: argparse.Namespace) -> int:
    """Apply the pending migrations (the built-in set first).

    Example:
        ```console
        $ flue-models migrate --dir ./migrations
        ```
    """
    progress = Progress()
    async with connect(
        args.url,
        key_prefix=args.prefix,
        inspect_server=not args.no_inspect,
        migrate=False,
        check_schema=False,
    ) as db:
        try:
            steps = await migrate(
                db,
                _sets(args),
                to=args.to,
                dry_run=args.dry_run,
                force=args.force,
                progress=progress,
            )
        finally:
            progress.done()
        statuses = await schema_status(db, _sets(args))
    if args.json:
        emit(
            {
                "dry_run": args.dry_run,
                "steps": [
                    {"file": s.file.label, "direction": s.direction, "seconds": s.seconds}
                    for s in steps
                ],
                "versions": {s.name: s.stored for s in statuses},
            }
        )
        return OK
    if not steps:
        print("up to date: " + ", ".join(f"{s.name} at {s.stored}" for s in statuses))
    for step in steps:
        if args.dry_run:
            verb = "would apply" if step.direction == "up" else "would revert"
            print(f"{verb} {step.file.label}: {step.file.description}")
        else:
            verb = "applied" if step.direction == "up" else "reverted"
            print(f"{verb} {step.file.label} ({step.seconds * 1000:.0f} ms)")
    return OK


async def migrations_status(args: argparse.Namespace) -> int:
    """Print each set's stored version, newest file, pending and changed files.

    Example:
        ```console
        $ flue-models migrations status
        ```
    """
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=False, migrate=False, check_schema=False
    ) as db:
        statuses = await schema_status(db, _sets(args))
    too_new = [s for s in statuses if s.stored > s.newest]
    if args.json:
        emit(
            [
                {
                    "set": s.name,
                    "stored": s.stored,
                    "newest": s.newest,
                    "pending": [f.label for f in s.pending],
                    "changed_since_applied": s.drift,
                }
                for s in statuses
            ]
        )
    else:
        for status in statuses:
            pending = ", ".join(f.label for f in status.pending) or "none"
            print(f"{status.name}: stored version {status.stored}, newest file {status.newest}")
            print(f"  pending: {pending}")
            print(f"  changed since applied: {', '.join(status.drift) or 'none'}")
    for status in too_new:
        print(
            f"error: the stored {status.name!r} schema ({status.stored}) is newer than this "
            f"installation's newest file ({status.newest}); upgrade flue-models.",
            file=sys.stderr,
        )
    return FAILED if too_new else OK


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


async def migrations_new(args: argparse.Namespace) -> int:
    """Write the next numbered migration file of the application.

    Example:
        ```console
        $ flue-models migrations new add_priority
        ```
    """
    path = _new_migration(args)
    if args.json:
        emit({"created": str(path)})
    else:
        print(f"created {path}")
    return OK


def _checkouts(directory: Path) -> list[Path]:
    """The folders above ``directory`` that are a flue-models source checkout (its
    ``pyproject.toml`` names the project; a ``pip install .`` leaves it beside the wheel)."""
    found = []
    for folder in (directory, *directory.parents):
        project = folder / "pyproject.toml"
        names_us = project.is_file() and re.search(
            r'(?m)^name\s*=\s*"flue-models"', project.read_text("utf-8", "replace")
        )
        if names_us and (folder / "flue_models" / "__init__.py").is_file():
            found.append(folder)
    return found


def _new_migration(args: argparse.Namespace) -> Path:
    chosen = args.dir or os.environ.get(MIGRATIONS_DIR_ENV) or "migrations"
    directory = Path(chosen).resolve()
    package = Path(flue_models.__file__).resolve().parent
    owned = [(builtin_directory().resolve(), "flue-models' own migrations folder"),
             (package, "the installed flue-models package")]  # fmt: skip
    owned += [(root, "a flue-models source checkout") for root in _checkouts(directory)]
    for own, what in owned:
        if _inside(directory, own):
            raise UsageError(
                f"{directory} is inside {what}; migrations of your application go in its "
                f"own folder: pass --dir (or set {MIGRATIONS_DIR_ENV}). Nothing was written."
            )
    return new_migration_file(directory, args.name)
