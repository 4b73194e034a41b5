"""The code stays ruff- and mypy-clean: CI fails on a lint error like on a failing test.

mypy runs with ``strict`` and ignores missing imports only for named third-party packages
(``pyproject.toml``), so an import of a module of ours that does not exist fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "exa_source", "dags", "bench", "tests", "dev.py"],
        ["ruff", "format", "--check", "exa_source", "dags", "bench", "tests", "dev.py"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint(command: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
