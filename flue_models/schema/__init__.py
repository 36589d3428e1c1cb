"""The schema record and the migrations that move the stored layout forward.

``<prefix>::{meta}`` holds, for each migration set, its ``schema_version`` (the built-in
set ``flue``) or ``schema_version:<set>`` (an application's set), for every applied
file ``applied:<set>:<NNNN>`` = ``{"name", "checksum", "at"}``, and for each collection
stored in more than one bucket ``buckets:<collection>``
(:mod:`flue_models.model.buckets`). A numbered folder of ``NNNN_name.py`` files moves
the stored layout forward; a store written by a newer schema or by an older pre-release
layout, or a prefix holding keys but no record, is refused before anything is written.

flue-models' own set is one file, ``NNNN_layout.py``, whose number is the stored layout's
version (:data:`LAYOUT_VERSION`): the package is unreleased, so its layout has no upgrade
path from earlier ones.

Modules: ``files`` (the numbered files and their sets), ``lock`` (one migrating process
per prefix), ``context`` (what a file's ``up(ctx)`` receives), ``runner`` (status and
:func:`migrate`).

Example:
    ```python
    applied = await migrate(db, [MigrationSet("billing", "./migrations")])
    ```
"""

from flue_models.schema.context import MigrationContext
from flue_models.schema.files import (
    BUILTIN_SET,
    LAYOUT_VERSION,
    MigrationFile,
    MigrationSet,
    builtin_directory,
    new_migration_file,
    version_field,
)
from flue_models.schema.lock import LOCK_TTL_MS, LOCK_WAIT_SECONDS, MigrationLock
from flue_models.schema.runner import (
    SetStatus,
    Step,
    check_schema,
    migrate,
    read_record,
    schema_status,
)

__all__ = [
    "BUILTIN_SET",
    "LAYOUT_VERSION",
    "LOCK_TTL_MS",
    "LOCK_WAIT_SECONDS",
    "MigrationContext",
    "MigrationFile",
    "MigrationLock",
    "MigrationSet",
    "SetStatus",
    "Step",
    "builtin_directory",
    "check_schema",
    "migrate",
    "new_migration_file",
    "read_record",
    "schema_status",
    "version_field",
]
