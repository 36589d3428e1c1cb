"""``flue-models verify``, ``prune`` and ``cluster split``: keeping a store sound."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from flue_models.cli.output import FAILED, OK, USAGE, UsageError, emit
from flue_models.errors import ConfigurationError
from flue_models.schema.split import split_collection
from flue_models.startup import connect
from flue_models.state.integrity import STATE_MODELS, verify_state
from flue_models.state.retention import DEFAULT_PRUNE_LIMIT, KIND_NAMES, Retention, prune_all
from flue_models.terminal import Progress


async def prune_store(args: argparse.Namespace) -> int:
    """Remove what is older than the given ages, in bounded batches.

    Example:
        ```console
        $ flue-models prune --runs 30d --streams 7d
        ```
    """
    chosen = {field: getattr(args, flag) for flag, field in KIND_NAMES.items()}
    policy = Retention(**chosen)
    if not policy.kinds():
        flags = ", ".join(f"--{flag}" for flag in KIND_NAMES)
        print(f"error: nothing to prune: give an age to at least one of {flags}", file=sys.stderr)
        return USAGE
    progress = Progress()
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        try:
            total = await prune_all(
                policy,
                limit=DEFAULT_PRUNE_LIMIT if args.limit is None else args.limit,
                dry_run=args.dry_run,
                progress=lambda t: progress(", ".join(f"{k} {n}" for k, n in t.counts.items())),
                db=db,
            )
        finally:
            progress.done()
    if args.json:
        emit(total.as_dict())
        return OK
    verb = "due" if args.dry_run else "removed"
    for flag, field in KIND_NAMES.items():
        if field in total.counts:
            print(f"{flag}: {total.counts[field]} {verb}")
    return OK


async def verify_store(args: argparse.Namespace) -> int:
    """Check rows against indexes, claims, streams and runs; exit 1 on drift.

    Example:
        ```console
        $ flue-models verify --repair
        ```
    """
    models = (*STATE_MODELS, *args.model)
    if args.collection:
        known = {m.__flue_spec__.collection for m in models}
        models = tuple(m for m in models if m.__flue_spec__.collection in args.collection)
        unknown = sorted(set(args.collection) - known)
        if unknown:
            names = ", ".join(sorted(known))
            print(f"error: no collection {unknown[0]!r}: known are {names}", file=sys.stderr)
            return USAGE
    async with connect(args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect) as db:
        report = await verify_state(models, repair=args.repair, db=db)
    if args.json:
        emit(report.as_dict())
    else:
        for drift in report.all_drift:
            print(
                f"{drift.kind}: {drift.key} {drift.record_id} ({drift.detail})".replace(" ()", "")
            )
        checked = ", ".join(f"{c.collection} {c.records}" for c in report.collections)
        repaired = f", {report.repaired} repaired" if args.repair else ""
        verdict = "ok" if report.ok else f"{len(report.all_drift)} finding(s)"
        print(f"{verdict}: {checked}, streams {report.streams}{repaired}")
    return OK if report.ok else FAILED


async def cluster_split(args: argparse.Namespace) -> int:
    """Move a collection's records into another number of buckets.

    Example:
        ```console
        $ flue-models cluster split ticket --buckets 16
        ```
    """
    if args.model is not None and args.model.__flue_spec__.collection != args.collection:
        raise UsageError(
            f"{args.model.__name__} is the model of collection "
            f"{args.model.__flue_spec__.collection!r}, not {args.collection!r}."
        )
    progress = Progress()
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=not args.no_inspect, migrate=False
    ) as db:
        try:
            report = await split_collection(
                db,
                args.collection,
                args.buckets,
                partition_by=args.partition_by,
                progress=progress,
            )
        except ConfigurationError as exc:  # the collection or the count cannot be split
            raise UsageError(str(exc)) from exc
        finally:
            progress.done()
    if args.json:
        emit(dataclasses.asdict(report))
    else:
        print(
            f"{report.collection}: {report.moved} of {report.records} record(s) moved; "
            f"{report.buckets} bucket(s) now"
        )
    return OK
