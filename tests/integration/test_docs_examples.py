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
