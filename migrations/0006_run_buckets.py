"""Spread the workflow runs over 16 buckets (16 Cluster slots).

``WorkflowRun`` declares ``RUN_BUCKETS`` (16) buckets: each run, with its index entries,
moves from bucket ``0`` (where ``0005_hash_tags`` put every run) into the bucket of its
id, one atomic call per run, and the schema record keeps the count. A store without runs
only records the count.

Checked before the first move: every key of the collection is one of the layout, every
run has a readable record of its index entries, and, when runs move, no other
flue-models client is connected to the prefix and the server is not a cluster (the runs
would move into other slots: migrate on a standalone server, then import). Idempotent and
resumable: a run already in its bucket stays, so a rerun moves what is left. ``down``
gathers the runs back into bucket ``0``.
"""

from flue_models.schema import MigrationContext
from flue_models.schema.split import move_collection
from flue_models.state.run import RUN_BUCKETS, WorkflowRun


async def up(ctx: MigrationContext) -> None:
    """Move each run into the bucket of its id."""
    collection = WorkflowRun.__flue_spec__.collection
    report = await move_collection(ctx.db, collection, RUN_BUCKETS, progress=ctx.report)
    ctx.report(f"{report.moved} of {report.records} run(s) moved into {RUN_BUCKETS} buckets")


async def down(ctx: MigrationContext) -> None:
    """Gather every run back into bucket 0."""
    collection = WorkflowRun.__flue_spec__.collection
    report = await move_collection(ctx.db, collection, 1, progress=ctx.report)
    ctx.report(f"{report.moved} of {report.records} run(s) moved back into one bucket")
