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
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daycare_cli import __version__
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.task import Task
from daycare_cli.core.taskhead import TaskHead

FORMAT = 6  # 2: slotted Task and triggers; 3: Task and Cached rebuilt by __init__; 5: own
# packed; 6: the header, the time, then the entries in chunks (one pickler), then None
CHUNK = 500  # entries a chunk: ~4 ms of pickling, after which another thread may run
RACY_NS = 2_000_000_000  # files modified within 2 s of the cache write are re-read


@dataclass(frozen=True, slots=True)
class Cached:
    """One parsed file as it was: the stat key, its digest, and the task or its error."""

    key: tuple[int, int, int]  # (size, inode, mtime_ns)
    digest: str
    task: Task | TaskHead | None  # a TaskHead when loaded `packed`
    error: TaskFileError | None

    def __reduce__(self) -> tuple[type[Cached], tuple[Any, ...]]:
        # Rebuilt by __init__: faster to load than a slotted dataclass's state.
        return (Cached, (self.key, self.digest, self.task, self.error))


class PackedUnpickler(pickle.Unpickler):
    """Loads pickled tasks as `TaskHead`s: `Task.__reduce__` rebuilds a task from its id,
    its packed own values and its settings, which are a head's three fields."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "daycare_cli.core.task" and name == "rebuild_task":
            return TaskHead
        return super().find_class(module, name)


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
        # When the files were looked at: an entry's parse (or digest check) is no older.
        self.read_ns = 0

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

    def load(self, *, packed: bool = False) -> None:
        """Read the cache; anything unexpected leaves it empty.

        `packed`: its tasks as `TaskHead`s, what the daemon's plan holds, made straight
        from what is stored (no `Task` built, no object for their own values).
        """
        entries: dict[str, Cached] = {}
        try:
            with self.path.open("rb") as f:
                reader = PackedUnpickler(f) if packed else pickle.Unpickler(f)
                if reader.load() != self.header():
                    return
                written_ns = int(reader.load())
                while (chunk := reader.load()) is not None:
                    entries.update(chunk)
        except Exception:  # missing, truncated, from another version: start empty
            return
        self.entries, self.written_ns = entries, written_ns

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

    def save(self, written_ns: int | None = None) -> None:
        """Write the cache atomically when it changed; a failure to write is not an error.

        `written_ns`: when its entries were last known right (a save later than the read
        must not pass as that time, or a racy edit in between would be trusted).
        """
        if not self.dirty:
            return
        written = written_ns if written_ns is not None else (self.read_ns or time.time_ns())
        # Pickled straight into a temporary file, renamed over the cache: no copy of the
        # whole (3 MB for 10,000 tasks) in memory; a reader sees the old or the new one.
        # In chunks, by one pickler (what tasks share is still written once): the daemon
        # writes it in a thread, and one dump of 10,000 entries would hold the event
        # loop's thread off for ~35 ms (an edit or a webhook answered that much later).
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                writer = pickle.Pickler(f, protocol=pickle.HIGHEST_PROTOCOL)
                writer.dump(self.header())
                writer.dump(written)
                items = list(self.entries.items())
                for start in range(0, len(items), CHUNK):
                    writer.dump(dict(items[start : start + CHUNK]))
                writer.dump(None)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.dirty = False

    def racy_after_read(self) -> bool:
        """True when some entry is racily clean for a cache written as read."""
        read = self.read_ns or time.time_ns()
        return any(c.key[2] >= read - RACY_NS for c in self.entries.values())

    def settle(
        self,
        *,
        max_wait: float = 5.0,
        now_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], bool] | None = None,
    ) -> int:
        """Save the cache so that the next load trusts every entry it can; returns how
        many racily clean entries were confirmed by their digest.

        Entries of files modified within RACY_NS of the read (a daemon started right
        after the files were written) would each be read and digested again at the next
        start. Here, once that window has passed (waiting up to `max_wait` seconds), each
        is checked once against its file, and the cache is written with the time of that
        check: the next load trusts them by their stat alone. An entry whose file changed
        meanwhile is dropped (the next load parses it). `sleep(seconds)` waits and
        returns True to cut the wait short (the daemon stops): the cache is then written
        as read. Blocking: call it in a thread.
        """
        sleep = sleep or _sleep
        read = self.read_ns or now_ns()
        racy = [n for n, c in self.entries.items() if c.key[2] >= read - RACY_NS]
        if not racy:
            self.save(read)
            return 0
        newest = max(self.entries[n].key[2] for n in racy)
        wait = (newest + RACY_NS - now_ns()) / 1e9 + 0.01
        if wait > max_wait:  # a file time in the future, or a long wait: check next load
            self.save(read)
            return 0
        if wait > 0 and sleep(wait):
            self.save(read)
            return 0
        checked = now_ns()
        confirmed = 0
        for name in racy:
            cached = self.entries[name]
            if same_content(os.path.join(self.tasks_dir, name), cached.key, cached.digest):
                confirmed += 1
            else:
                del self.entries[name]  # changed since it was parsed: parsed next time
            if confirmed % 256 == 0:
                sleep(0)  # leave the event loop's thread a turn at the GIL
        self.dirty = True
        self.save(checked)
        return confirmed


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def read_bytes(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """The first `limit` bytes of a regular file, and its stat before reading."""
    # O_NONBLOCK: a FIFO named like a task file must not hang the reader.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise OSError(0, f"it is {what}")
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def same_content(path: str | os.PathLike[str], key: tuple[int, int, int], digest: str) -> bool:
    """True when the file still has the stat key and the content (digest) of a cached
    parse: a racily clean cache entry is then right, and the file need not be parsed."""
    from daycare_cli.core.taskfile import MAX_FILE_BYTES

    try:
        data, st = read_bytes(path, MAX_FILE_BYTES + 1)
    except OSError:
        return False
    return stat_key(st) == key and hashlib.sha256(data).hexdigest() == digest
