"""``flue-models check`` and ``flue-models server status|stop``: the server and the
embedded one."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from flue_models.cli.output import NOT_FOUND, OK, emit
from flue_models.config import data_dir_from_environment
from flue_models.embedded import EmbeddedServer
from flue_models.errors import ServerCheckError
from flue_models.inspection import ServerReport, assess, read_server
from flue_models.startup import connect
from flue_models.terminal import one_line


async def check(args: argparse.Namespace) -> int:
    """Print what the server is and how it is set up, then refuse what the start-up checks refuse.

    Example:
        ```console
        $ flue-models check
        ```
    """
    async with connect(
        args.url, key_prefix=args.prefix, inspect_server=False, migrate=False, check_schema=False
    ) as db:
        report = await read_server(db.client)
        embedded = None if db.embedded is None else str(db.embedded.data_dir)
    caught: list[str] = []
    problem: ServerCheckError | None = None
    if not args.no_inspect:
        problem, caught = assess(report)
    checks = "skipped" if args.no_inspect else "failed" if problem else "passed"
    if args.json:
        emit(
            {
                "url": db.url.display,
                "prefix": db.keys.prefix,
                "embedded_data_dir": embedded,
                "server": {"family": report.flavor, "version": report.version},
                "cluster": report.cluster_enabled,
                "maxmemory_policy": report.maxmemory_policy,
                "persistence": report.persistence,
                "used_memory": report.used_memory,
                "maxmemory": report.maxmemory,
                "replicas": _replicas_json(report),
                "primaries": [
                    {
                        "node": p.node,
                        "server": {"family": p.flavor, "version": p.version},
                        "maxmemory_policy": p.maxmemory_policy,
                        "persistence": p.persistence,
                        "used_memory": p.used_memory,
                        "maxmemory": p.maxmemory,
                        "replicas": _replicas_json(p),
                    }
                    for p in report.primaries
                ],
                "checks": checks,
                "warnings": caught,
            }
        )
    else:
        where = db.url.display + ("" if embedded is None else f" (embedded, data in {embedded})")
        print(f"url: {where}")
        print(f"prefix: {db.keys.prefix}")
        for line in report.lines():
            print(line)
        for message in caught:
            print(f"warning: {one_line(message)}", file=sys.stderr)
        shown = {"skipped": "skipped (--no-inspect)", "passed": f"passed ({report.summary()})"}
        print(f"checks: {shown.get(checks, checks)}")
    if problem is not None:
        raise problem
    return OK


def _replicas_json(report: ServerReport) -> list[dict[str, Any]] | None:
    if report.replicas is None:
        return None
    return [{"address": r.address, "state": r.state, "lag": r.lag} for r in report.replicas]


def _server_for(args: argparse.Namespace) -> EmbeddedServer:
    return EmbeddedServer(Path(args.data_dir) if args.data_dir else data_dir_from_environment())


async def server_status(args: argparse.Namespace) -> int:
    """Say whether the embedded server runs, and where.

    Example:
        ```console
        $ flue-models server status
        ```
    """
    server = _server_for(args)
    record = server.running()
    identity = server.recorded_identity()
    if args.json:
        emit(
            {
                "running": record is not None,
                "data_dir": str(server.data_dir),
                "pid": record.pid if record else None,
                "url": record.url if record else None,
                "binary": record.binary if record else None,
                "written_by": identity.label if identity else None,
            }
        )
    elif record is None:
        print(f"embedded server: not running (data in {server.data_dir})")
    else:
        print(f"embedded server: running, pid {record.pid}, {record.url}")
        print(f"data: {server.data_dir}")
        print(f"binary: {record.binary}")
        if identity is not None:
            print(f"data written by: {identity.label}")
    return OK if record is not None else NOT_FOUND


async def server_stop(args: argparse.Namespace) -> int:
    """Stop the embedded server (its data stays on disk).

    Example:
        ```console
        $ flue-models server stop
        ```
    """
    server = _server_for(args)
    async with server.locked():
        stopped = await asyncio.to_thread(server.stop)
    if args.json:
        emit({"stopped": stopped})
    else:
        print("embedded server: stopped" if stopped else "embedded server: was not running")
    return OK
