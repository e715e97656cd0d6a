"""A cache of parsed task files, so `task ls` and a daemon restart skip unchanged files.

Keyed by file name, size, inode and mtime. An entry is trusted only when the file was last
modified well before the cache was written (git's "racily clean" rule): file times have a
coarse granularity, so a same-size rewrite within it would otherwise look unchanged.
The cache is a private file of daycare's home; a missing, foreign or corrupt cache is
simply rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daycare_cli import __version__
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.task import Task

FORMAT = 2  # 2: slotted Task and triggers
RACY_NS = 2_000_000_000  # files modified within 2 s of the cache write are re-read


@dataclass(frozen=True, slots=True)
class Cached:
    """One parsed file as it was: the stat key, its digest, and the task or its error."""

    key: tuple[int, int, int]  # (size, inode, mtime_ns)
    digest: str
    task: Task | None
    error: TaskFileError | None


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies an unchanged file: size, inode, modification time."""
    return (st.st_size, st.st_ino, st.st_mtime_ns)


class TaskCache:
    """The parse cache of one tasks directory, stored under `<home>/cache/`."""

    def __init__(self, home: Path, tasks_dir: Path) -> None:
        tag = hashlib.sha1(str(tasks_dir).encode(), usedforsecurity=False).hexdigest()[:12]
        self.path = home / "cache" / f"tasks-{tag}.pickle"
        self.tasks_dir = str(tasks_dir)
        self.entries: dict[str, Cached] = {}
        self.written_ns = 0
        self.dirty = False

    def header(self) -> dict[str, Any]:
        """What must match for the cache to apply: versions, the reader's code, the dir."""
        core = Path(__file__).resolve().parents[1] / "core"
        # Every module of core/: the reader and whatever it calls (durations, cron fields,
        # prompt blocks). A stat each is cheaper than a list that goes stale.
        reader = []
        for module in sorted(core.glob("*.py")):
            with contextlib.suppress(OSError):
                reader.append((module.name, module.stat().st_mtime_ns))
        return {
            "format": FORMAT,
            "daycare": __version__,
            "python": sys.version_info[:2],
            "reader": reader,  # a changed parser (an upgrade, a checkout) empties the cache
            "tasks_dir": self.tasks_dir,
        }

    def load(self) -> None:
        """Read the cache; anything unexpected leaves it empty."""
        try:
            with self.path.open("rb") as f:
                header, written_ns, entries = pickle.load(f)
        except Exception:  # missing, truncated, from another version: start empty
            return
        if header != self.header() or not isinstance(entries, dict):
            return
        self.entries, self.written_ns = entries, int(written_ns)

    def get(self, name: str, st: os.stat_result) -> Cached | None:
        """The cached parse of a file, if the file is certainly unchanged since."""
        hit, trusted = self.lookup(name, st)
        return hit if trusted else None

    def lookup(self, name: str, st: os.stat_result) -> tuple[Cached | None, bool]:
        """The cached parse of a file with the same stat key, and whether it can be
        trusted as is; an untrusted one is right only if the file's digest matches.

        Racily clean: modified too close to the cache write to tell from the stat. The
        caller reads the file; the cache is rewritten so a later look trusts the entry.
        """
        hit = self.entries.get(name)
        if hit is None or hit.key != stat_key(st):
            return None, False
        if st.st_mtime_ns >= self.written_ns - RACY_NS:
            self.dirty = True
            return hit, False
        return hit, True

    def put(self, name: str, value: Cached) -> None:
        if self.entries.get(name) != value:
            self.entries[name] = value
            self.dirty = True

    def retain(self, names: set[str]) -> None:
        """Forget files that are gone."""
        gone = set(self.entries) - names
        for name in gone:
            del self.entries[name]
        self.dirty = self.dirty or bool(gone)

    def save(self) -> None:
        """Write the cache atomically when it changed; a failure to write is not an error."""
        if not self.dirty:
            return
        from daycare_cli.store.paths import atomic_write

        data = pickle.dumps(
            (self.header(), time.time_ns(), self.entries), protocol=pickle.HIGHEST_PROTOCOL
        )
        with contextlib.suppress(OSError):
            atomic_write(self.path, data, mode=0o600)
        self.dirty = False
