"""docs/security.md: every test it names exists, and every row of its tables names one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"


def test_every_named_test_exists():
    text = DOC.read_text()
    named = 0
    for cell in re.findall(r"`(tests/[^`]+|::[a-z_0-9]+)`", text):
        if cell.startswith("tests/"):
            path, _, name = cell.partition("::")
            current = ROOT / path
            assert current.exists(), cell
        else:
            name = cell[2:]
        if name:
            assert re.search(rf"^def {name}\(", current.read_text(), re.M), cell
        named += 1
    assert named >= 30


def test_every_table_row_names_a_test():
    rows = [
        line
        for line in DOC.read_text().splitlines()
        if line.startswith("| ") and not line.startswith(("| threat", "| promise", "|---"))
    ]
    assert len(rows) >= 25
    for row in rows:
        assert "`tests/" in row, row
