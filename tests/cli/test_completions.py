"""Completion scripts are current, and task ids complete dynamically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_completion_scripts_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "completions" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("daycare.bash", "_daycare", "daycare.fish"):
        assert "_DAYCARE_COMPLETE" in (REPO / "completions" / name).read_text()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("daycare task show mo", ["morning-news", "mowing"]),
        ("daycare task show mor", ["morning-news"]),
        ("daycare task trigger add mow", ["mowing"]),
        ("daycare task lint ", ["morning-news", "mowing", "other"]),
        ("daycare task sh", ["show"]),
    ],
)
def test_task_ids_complete_from_the_tasks_directory(
    run, write, words: str, expected: list[str]
) -> None:
    for task_id in ("morning-news", "mowing", "other"):
        write(task_id, "---\nname: x\n---\nx\n")
    parts = words.split(" ")
    result = run(
        env={
            "_DAYCARE_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
        }
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == expected


def test_completion_follows_tasks_dir(run, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "elsewhere.md").write_text("---\nname: x\n---\nx\n")
    words = f"daycare task show --tasks-dir {other} e"
    result = run(env={"_DAYCARE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "5"})
    assert result.stdout.split() == ["elsewhere"]
