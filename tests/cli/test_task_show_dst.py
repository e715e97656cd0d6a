"""`daycare task show` marks fires a DST change moved or repeated, in text and in --json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import Result

TASK = """---
name: March Sundays
schedule: "30 2 * 3 SUN"
timezone: Europe/Berlin
---
Body.
"""


def test_show_notes_the_skipped_0230_on_the_last_sunday_of_march(
    run: Callable[..., Result], write: Callable[[str, str], Path]
) -> None:
    """Every March Sunday at 02:30: the next 5 fires always hold the last Sunday of a
    March, when Berlin's clocks jump from 02:00 to 03:00 (whatever today is)."""
    write("sundays", TASK)
    shown = run("task", "show", "sundays", "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert len(data["fires_dst"]) == len(data["fires"]) == 5
    notes = [
        (fire, note) for fire, note in zip(data["fires"], data["fires_dst"], strict=True) if note
    ]
    assert len(notes) == 1
    ((fire, note),) = notes
    assert fire.endswith("T03:00:00+02:00")
    assert note == f"02:30 does not exist on {fire[:10]}: runs at 03:00 +02:00"
    others = [f for f in data["fires"] if f != fire]
    assert all(f.endswith("T02:30:00+01:00") for f in others)

    text = run("task", "show", "sundays")
    assert text.exit_code == 0, text.output
    assert f"(02:30 does not exist on {fire[:10]}: runs at 03:00 +02:00)" in text.stdout
