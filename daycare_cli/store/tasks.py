"""The tasks directory: list, load, save and archive task files.

The daemon and the CLI both read files through `core/taskfile.parse_task`, so they never
disagree on what a file means. A file that does not parse is still listed, with its error.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daycare_cli.core.errors import NotFoundError, TaskFileError, UsageError
from daycare_cli.core.task import TASK_ID_RULE, Task, valid_task_id
from daycare_cli.core.taskhead import TaskHead
from daycare_cli.core.taskid import slugify
from daycare_cli.store.paths import Paths, atomic_write
from daycare_cli.store.taskcache import Cached, TaskCache, read_bytes, same_content, stat_key

if TYPE_CHECKING:
    from daycare_cli.store.prefetch import Prefetch

# Editor droppings and partial writes the tasks directory may contain.
IGNORED_SUFFIXES = (".swp", ".swx", ".swo", "~", ".tmp", ".bak")


def is_task_file(name: str) -> bool:
    """True for names that may be task files (`*.md`, not hidden, not editor temp files)."""
    return (
        name.endswith(".md")
        and not name.startswith((".", "#", "~"))
        and not name.endswith(IGNORED_SUFFIXES)
    )


class TaskEntry:
    """One task file as read: the parsed task or the error that stopped it.

    `key` is the (size, inode, mtime) of the version that was parsed, when known. An
    entry the parse cache answered (`TaskEntry.listed`) makes its `path` when asked: a
    daemon's start lists 10,000 files and never asks. In a `packed` listing (the
    daemon's), a task that comes from a pickle is given as its `head` only (`task` None).
    """

    __slots__ = ("_dir", "_path", "digest", "error", "head", "id", "key", "task", "text")

    def __init__(
        self,
        id: str,
        path: Path,
        text: str | None,
        task: Task | None,
        error: TaskFileError | None,
        digest: str,
        key: tuple[int, int, int] | None = None,
    ) -> None:
        self.id = id
        self._path: Path | None = path
        self._dir: Path | None = None
        self.text = text
        self.task = task
        self.error = error
        self.digest = digest
        self.key = key
        self.head: TaskHead | None = None

    @classmethod
    def listed(
        cls,
        directory: Path,
        task_id: str,
        task: Task | TaskHead | None,
        error: TaskFileError | None,
        digest: str,
    ) -> TaskEntry:
        """The entry of `<directory>/<task_id>.md`, without its text, its path made later."""
        entry = cls.__new__(cls)
        entry.id, entry._path, entry._dir, entry.text = task_id, None, directory, None
        entry.error, entry.digest, entry.key = error, digest, None
        entry.task, entry.head = (None, task) if isinstance(task, TaskHead) else (task, None)
        return entry

    @property
    def path(self) -> Path:
        """The task file."""
        if self._path is None:
            assert self._dir is not None
            self._path = self._dir / f"{self.id}.md"
        return self._path

    def __repr__(self) -> str:
        return f"TaskEntry({self.id!r}, {self.path!r}, error={self.error!r})"

    def require(self) -> Task:
        """The task, or raise its file error."""
        if self.task is None:
            assert self.error is not None
            raise self.error
        return self.task


# A file still changing after this many reads is returned as last read; its key then
# differs from the file's, so the cache and the watcher read it again later.
REREADS = 3


def read_entry(path: Path) -> TaskEntry:
    """Read and parse one task file; never raises for a bad file.

    NotFoundError when there is no such file. At most MAX_FILE_BYTES + 1 bytes are read,
    so a huge file is refused without being loaded. A file that changes while it is read
    and parsed (size, inode or mtime differ afterwards) is read again, up to REREADS times.
    """
    task_id = path.name[:-3] if path.name.endswith(".md") else path.name
    entry = _read_once(path, task_id)
    for _ in range(REREADS - 1):
        if entry.key is None:
            return entry  # not readable at all: nothing to compare
        try:
            now = stat_key(os.stat(path))
        except FileNotFoundError:
            raise NotFoundError(f"no task file {path.name}", path=str(path)) from None
        except OSError:
            return entry
        if now == entry.key:
            return entry
        entry = _read_once(path, task_id)
    return entry


def _read_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """The first MAX_FILE_BYTES + 1 bytes of a regular file, and its stat before reading."""
    from daycare_cli.core.taskfile import MAX_FILE_BYTES

    return read_bytes(path, MAX_FILE_BYTES + 1)


def _read_once(path: Path, task_id: str) -> TaskEntry:
    from daycare_cli.core.taskfile import parse_task

    try:
        data, st = _read_bytes(path)
    except FileNotFoundError:
        raise NotFoundError(f"no task file {path.name}", path=str(path)) from None
    except OSError as exc:
        err = TaskFileError(f"cannot read the file: {exc.strerror}", path=str(path))
        return TaskEntry(task_id, path, None, None, err, "")
    key = stat_key(st)
    digest = hashlib.sha256(data).hexdigest()
    text: str | None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if not valid_task_id(task_id):
        err = TaskFileError(
            f"file name {path.name!r} is not a valid task id",
            path=str(path),
            hint=f"rename it to lower-case letters, digits and dashes, e.g. {slugify(task_id)}.md",
        )
        return TaskEntry(task_id, path, text, None, err, digest, key)
    try:
        task = parse_task(data, path=str(path), task_id=task_id)
    except TaskFileError as exc:
        return TaskEntry(task_id, path, text, None, exc, digest, key)
    return TaskEntry(task_id, path, text, task, None, digest, key)


@dataclass
class SettledRead:
    """What `read_settled` found: parsed entries, files gone, and files still being written."""

    entries: dict[Path, TaskEntry] = field(default_factory=dict)
    gone: list[Path] = field(default_factory=list)
    unsettled: list[Path] = field(default_factory=list)


def read_settled(
    paths: Iterable[Path],
    quiet: float,
    *,
    limit: float = 1.0,
    read: Callable[[Path], TaskEntry] | None = None,
    now_ns: Callable[[], int] = time.time_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> SettledRead:
    """Read each file once its writes have settled: unchanged (size, inode, mtime) for
    `quiet` seconds. A file written again while it was read waits and is read again.

    An editor that writes a file in two chunks leaves a half file for a moment; reading it
    then would schedule half a task. Files still changing after `limit` seconds are left
    in `unsettled` (their next write brings them back to the caller). `read` reads and
    parses one file (`read_entry`, or the daemon's worker process for big files).
    Blocking: the daemon calls it in a worker thread.
    """
    read = read or read_entry
    out = SettledRead()
    pending = list(paths)
    deadline = now_ns() + int(limit * 1e9)
    quiet_ns = int(quiet * 1e9)
    seen: dict[Path, tuple[int, int, int]] = {}  # the stat at the last look, while waiting
    while pending:
        waiting: list[Path] = []
        wait_ns = 0
        for path in pending:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out.gone.append(path)
                continue
            except OSError:
                st = None
            if st is not None:
                key = stat_key(st)
                age = now_ns() - st.st_mtime_ns
                # Settled: written `quiet` ago, or unchanged across the last wait (which was
                # long enough for it; this also settles a file whose mtime is in the future).
                if age < quiet_ns and seen.get(path) != key:
                    seen[path] = key
                    waiting.append(path)
                    wait_ns = max(wait_ns, quiet_ns - max(age, 0))
                    continue
            try:
                entry = read(path)
            except NotFoundError:
                out.gone.append(path)
                continue
            if st is not None and entry.key != _current_key(path):
                seen.pop(path, None)  # written since it settled: it must settle again
                waiting.append(path)
                wait_ns = max(wait_ns, quiet_ns)
                continue
            out.entries[path] = entry
        pending = waiting
        if pending:
            if now_ns() + wait_ns > deadline:
                out.unsettled = pending
                break
            sleep(wait_ns / 1e9)
    return out


def _current_key(path: Path) -> tuple[int, int, int] | None:
    try:
        return stat_key(os.stat(path))
    except OSError:
        return None


def _read_or_none(path: Path) -> TaskEntry | None:
    try:
        return read_entry(path)
    except NotFoundError:
        return None  # removed since listed


def read_entries(paths: list[Path]) -> list[TaskEntry | None]:
    """Parse many files; None for a file removed since it was listed.

    (Worker processes were measured for a 10,000-file start on 2 cores: spawning them
    and sending the parsed tasks back cost more than the parse they shared.)
    """
    return [_read_or_none(p) for p in paths]


# What `TaskStore._look` found: files, the cache, its answers, and the files to parse.
# The names, the cache, the entries it answered, and the files to parse with their stat key.
_Listing = tuple[list[str], TaskCache, dict[str, TaskEntry], list[tuple[str, tuple[int, int, int]]]]


class TaskStore:
    """Task files of one tasks directory."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.dir = paths.tasks_dir
        self.unsaved: TaskCache | None = None  # a cache `list(defer_save=True)` left
        self.prefetch: Prefetch[Cached] | None = None  # a child `prepare` started

    def files(self) -> list[Path]:
        """Task files, sorted by name."""
        return [self.dir / n for n in self.names()]

    def names(self) -> list[str]:
        """The names of the task files, sorted."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return [n for n in sorted(names) if is_task_file(n)]

    def list(
        self, *, cached: bool = True, defer_save: bool = False, packed: bool = False
    ) -> list[TaskEntry]:
        """Every task file, parsed, in id order; invalid files included with their error.

        Unchanged files come from the parse cache (`store/taskcache.py`); their entries
        carry no text, so edits go through `load`, which always reads the file. With
        `defer_save`, the cache is kept for `save_cache` (the daemon's start writes it
        after its ready line) instead of being written now. The files a child `prepare`
        started has parsed are taken from it, when their stat is still the one it read.
        With `packed`, the tasks that come from the cache (or the child) come as their
        `head` only (`core/taskhead.py`: what the daemon's plan holds), no `Task` built.
        """
        if not cached:
            return [read_entry(p) for p in self.files()]
        from daycare_cli.core.taskshare import SharedParts

        names, cache, found, misses = self._look(packed=packed)
        prefetch, self.prefetch = self.prefetch, None
        mine = [self.dir / n for n, _ in misses if prefetch is None or n not in prefetch.names]
        read = {p.name: e for p, e in zip(mine, read_entries(mine), strict=True)}
        theirs = prefetch.collect(packed=packed) if prefetch is not None else {}
        shared = SharedParts()
        for name, seen in misses:
            hit = theirs.get(name)
            if hit is not None and hit.key == seen:
                # Parsed by a child, as the file still is (its parts shared already).
                task_id = hit.task.id if hit.task is not None else name[:-3]
                found[name] = TaskEntry.listed(self.dir, task_id, hit.task, hit.error, hit.digest)
                cache.put(name, hit)
                continue
            # Read here: not a child's, or it failed, or the file changed since it read it.
            entry = read[name] if name in read else _read_or_none(self.dir / name)
            if entry is None:
                continue
            if entry.task is not None:
                # One copy of what tasks share; the cache, pickled from these, keeps it so.
                entry.task = shared.task(entry.task)
            # The key is the stat of the version parsed: a change after it shows next time.
            key = entry.key or seen
            cache.put(name, Cached(key, entry.digest, entry.task, entry.error))
            found[name] = entry
        cache.retain(set(found))
        if defer_save:
            # Nothing to write and nothing to confirm: no need to hold the entries.
            self.unsaved = cache if cache.dirty or cache.racy_after_read() else None
        else:
            cache.save()
        return [found[n] for n in names if n in found]

    def prepare(self, *, prefetch_dir: Path, min_files: int | None = None) -> int:
        """At a daemon's start with no parse cache (the first, or after it was removed):
        when there are many task files, fork children that parse them while the start
        does its other work (`store/prefetch.py`); the next `list` takes what they
        parsed. How many files the children parse. Called first thing, before any thread.
        """
        from daycare_cli.store.prefetch import MAX_CHILDREN, MIN_FILES, Prefetch, usable_cpus

        if TaskCache(self.paths.home, self.dir).path.exists():
            return 0  # a restart: the cache answers for most files
        names = self.names()
        if len(names) < (min_files or MIN_FILES):
            return 0
        from daycare_cli.core.taskshare import SharedParts

        shared = SharedParts()  # the child's own

        def read(name: str) -> Cached:
            # What the cache keeps (no text, no path: the daemon has both or no use for them).
            entry = read_entry(self.dir / name)
            task = shared.task(entry.task) if entry.task is not None else None
            return Cached(entry.key or (-1, -1, -1), entry.digest, task, entry.error)

        children = max(1, min(MAX_CHILDREN, usable_cpus()))
        self.prefetch = Prefetch.start(names, prefetch_dir, read, children=children)
        return len(self.prefetch.names) if self.prefetch is not None else 0

    def _look(self, *, packed: bool = False) -> _Listing:
        """The task files, the cache, the entries it answers and the files to parse."""
        names = self.names()
        cache = TaskCache(self.paths.home, self.dir)
        cache.read_ns = time.time_ns()
        cache.load(packed=packed)
        found: dict[str, TaskEntry] = {}
        # A miss keeps its stat key, not its stat: 10,000 stat results (600 B each, with
        # their times as floats) were 6 MB of a cold start's peak.
        misses: list[tuple[str, tuple[int, int, int]]] = []
        where = str(self.dir)
        # Each file's stat by name, relative to the directory: no path object per file
        # (10,000 of them, and each name interned for good by pathlib, at a restart).
        try:
            fd: int | None = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = None
        try:
            for name in names:
                try:
                    st = os.stat(name, dir_fd=fd) if fd is not None else os.stat(f"{where}/{name}")
                except OSError:
                    continue  # removed since listed
                hit, trusted = cache.lookup(name, st)
                if hit is None or not (
                    trusted or same_content(f"{where}/{name}", hit.key, hit.digest)
                ):
                    misses.append((name, stat_key(st)))
                    continue
                # The task's own id string (one copy per task held, not two).
                task_id = name[:-3]
                if hit.task is not None and hit.task.id == task_id:
                    task_id = hit.task.id
                found[name] = TaskEntry.listed(self.dir, task_id, hit.task, hit.error, hit.digest)
        finally:
            if fd is not None:
                os.close(fd)
        return (names, cache, found, misses)

    def save_cache(
        self, *, max_wait: float = 5.0, sleep: Callable[[float], bool] | None = None
    ) -> int:
        """Write the cache `list(defer_save=True)` kept, once its racily clean entries are
        confirmed (`TaskCache.settle`); how many were. Blocking: call it in a thread."""
        cache, self.unsaved = self.unsaved, None
        return cache.settle(max_wait=max_wait, sleep=sleep) if cache is not None else 0

    def load(self, task_id: str) -> TaskEntry:
        """One task file by id; NotFoundError (with close matches) when absent.

        An id that breaks the id rule is not found, whatever files exist: no path
        is built from it.
        """
        if not valid_task_id(task_id):
            raise NotFoundError(
                f"no task {task_id!r}: task ids are {TASK_ID_RULE}",
                hint="list tasks with `daycare task ls`",
            )
        path = self.dir / f"{task_id}.md"
        if not path.exists():
            import difflib

            ids = [p.name[:-3] for p in self.files()]
            close = difflib.get_close_matches(task_id, ids, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "list tasks with `daycare task ls`"
            raise NotFoundError(f"no task {task_id!r} in {self.dir}", hint=hint)
        return read_entry(path)

    def get(self, task_id: str) -> Task:
        """The parsed task, raising its TaskFileError when invalid."""
        return self.load(task_id).require()

    def new_id(self, name: str, taken: Iterable[str] = ()) -> str:
        """A fresh id for a name: its slug, then -2, -3 ... past live, archived and `taken` ids."""
        base = slugify(name)
        used = set(taken)
        used.update(p.name[:-3] for p in self.files())
        if self.paths.archive_dir.is_dir():
            used.update(n.split(".", 1)[0] for n in os.listdir(self.paths.archive_dir))
        if self.paths.workspaces.is_dir():
            used.update(os.listdir(self.paths.workspaces))
        if base not in used:
            return base
        n = 2
        while True:
            suffix = f"-{n}"
            candidate = base[: 63 - len(suffix)].rstrip("-") + suffix
            if candidate not in used:
                return candidate
            n += 1

    def create(self, task_id: str, text: str) -> Path:
        """Write a new task file; refuses to replace an existing one."""
        if not valid_task_id(task_id):
            raise UsageError(
                f"{task_id!r} is not a valid task id",
                hint="use lower-case letters, digits and dashes (at most 63)",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{task_id}.md"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise UsageError(f"task {task_id!r} already exists", path=str(path)) from None
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return path

    def save(self, entry: TaskEntry, text: str) -> None:
        """Replace a task file atomically, unless it changed on disk since `entry` was read."""
        try:
            current = hashlib.sha256(entry.path.read_bytes()).hexdigest()
        except FileNotFoundError:
            current = ""
        if current != entry.digest:
            raise TaskFileError(
                "the file changed on disk since it was read; nothing was written",
                path=str(entry.path),
                hint="run the command again to apply it to the new version",
            )
        atomic_write(entry.path, text.encode("utf-8"))

    def archive(self, task_id: str) -> Path:
        """Move a task file to `.archive/` so its id is not reused while history exists."""
        entry_path = self.dir / f"{task_id}.md"
        if not entry_path.exists():
            raise NotFoundError(f"no task {task_id!r} in {self.dir}")
        self.paths.archive_dir.mkdir(parents=True, exist_ok=True)
        target = self.paths.archive_dir / f"{task_id}.md"
        if target.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            target = self.paths.archive_dir / f"{task_id}.{stamp}.md"
        os.replace(entry_path, target)
        return target
