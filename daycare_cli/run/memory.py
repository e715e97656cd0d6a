"""A task's memory: the notes its model keeps with `remember` (memory.md in the workspace).

Notes are shown to the model, oldest first, at the start of every run; the file is
bounded, dropping whole old lines first.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from daycare_cli.store.paths import atomic_write

MEMORY_LIMIT = 16 * 1024


def read_memory(path: Path) -> str:
    """The task's memory file, or "" when there is none yet."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return ""


def append_memory(path: Path, note: str, now: datetime) -> None:
    """Append one dated line to memory.md, dropping the oldest lines beyond MEMORY_LIMIT.

    A note is flattened to one line so that dropping whole lines keeps the rest intact;
    a single note longer than the limit is cut.
    """
    flat = " ".join(note.split())
    line = f"- {now.isoformat(timespec='minutes')}: {flat}\n"
    data = line.encode("utf-8")
    if len(data) > MEMORY_LIMIT:
        line = data[: MEMORY_LIMIT - 1].decode("utf-8", errors="ignore") + "\n"
    existing = read_memory(path)
    if existing and not existing.endswith("\n"):
        existing += "\n"
    lines = (existing + line).splitlines(keepends=True)
    size = sum(len(x.encode("utf-8")) for x in lines)
    while size > MEMORY_LIMIT and len(lines) > 1:
        size -= len(lines.pop(0).encode("utf-8"))
    atomic_write(path, "".join(lines))
