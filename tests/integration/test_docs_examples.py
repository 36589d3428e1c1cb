"""Every example the documentation includes runs against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
# Runnable examples end with a main guard; the others are modules they import.
EXAMPLES = sorted(
    path
    for path in (ROOT / "docs" / "examples").glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text()
)


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, redis_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(example)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "an example should show what it did"


def test_the_quickstart_shows_what_check_prints(redis_url: str, key_prefix: str) -> None:
    """The quickstart's sample of ``flue-models check``: the same lines in the same order,
    and the same words where they do not depend on the machine."""
    page = (ROOT / "docs" / "quickstart.md").read_text()
    sample = page.split("$ .venv/bin/flue-models check\n", 1)[1].split("```", 1)[0]
    shown = [line.split(": ", 1) for line in sample.strip().splitlines()]
    result = subprocess.run(
        [sys.executable, "-m", "flue_models.cli", "check", "--url", redis_url,
         "--prefix", key_prefix],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = [line.split(": ", 1) for line in result.stdout.strip().splitlines()]
    assert [label for label, _ in printed] == [label for label, _ in shown]
    for (label, value), (_, sample_value) in zip(printed, shown, strict=True):
        if label in ("cluster", "maxmemory-policy", "checks"):
            assert value == sample_value, label
