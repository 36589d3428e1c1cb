"""The command line loads only what the command that runs needs (flue_models/cli/)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flue_models.cli.parser import build_parser
from tests.command_line import ROOT

#: Modules no command needs before it runs: the client library and the model layer's.
HEAVY = ("redis", "pydantic", "flue_models.startup", "flue_models.model")


def modules_after(*args: str) -> set[str]:
    """The modules imported by ``flue-models ARGS`` (run in a fresh interpreter)."""
    script = (
        "import sys\n"
        "from flue_models.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    return set(done.stderr.split())


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["runs", "--help"]])
def test_version_and_help_import_neither_redis_nor_the_model_layer(args: list[str]) -> None:
    loaded = modules_after(*args)
    assert "flue_models.cli.parser" in loaded  # the probe itself ran
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == []


def test_a_command_imports_its_own_module_only() -> None:
    loaded = modules_after("events", "read", "p", "--url", "redis://127.0.0.1:1/0")
    assert "flue_models.cli.events" in loaded
    assert "flue_models.cli.runs" not in loaded
    assert "flue_models.cli.maintenance" not in loaded


def test_the_defaults_the_help_names_are_the_librarys() -> None:
    from flue_models.state.events import TAIL_OUTAGE_SECONDS
    from flue_models.state.retention import DEFAULT_PRUNE_LIMIT

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    prune_help = commands["prune"].format_help()
    assert f"(default {DEFAULT_PRUNE_LIMIT})" in " ".join(prune_help.split())
    events = commands["events"]._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    tail_help = " ".join(events["tail"].format_help().split())
    assert f"(default {TAIL_OUTAGE_SECONDS:g})" in tail_help
