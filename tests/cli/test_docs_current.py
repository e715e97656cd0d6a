"""docs/cli.md carries the current `--help` of every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "docs" / "generate_cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_every_command_is_documented() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    for command in (
        "task create", "task ls", "task show", "task update", "task edit", "task delete",
        "task enable", "task disable", "task lint", "task trigger add", "task trigger rm",
        "topology", "next", "cron explain", "config get", "config set",
    ):  # fmt: skip
        assert f"### `daycare {command}`" in text
