"""The tasks directory: list, load, save and archive task files.

The daemon and the CLI both read files through `core/taskfile.parse_task`, so they never
disagree on what a file means. A file that does not parse is still listed, with its error.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daycare_cli.core.errors import NotFoundError, TaskFileError, UsageError
from daycare_cli.core.task import TASK_ID_RULE, Task, valid_task_id
from daycare_cli.store.paths import Paths, atomic_write
from daycare_cli.store.taskcache import stat_key

# Editor droppings and partial writes the tasks directory may contain.
IGNORED_SUFFIXES = (".swp", ".swx", ".swo", "~", ".tmp", ".bak")


def is_task_file(name: str) -> bool:
    """True for names that may be task files (`*.md`, not hidden, not editor temp files)."""
    return (
        name.endswith(".md")
        and not name.startswith((".", "#", "~"))
        and not name.endswith(IGNORED_SUFFIXES)
    )


def slugify(name: str) -> str:
    """A task id from a name: lower case, dashes, at most 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    slug = slug[:63].rstrip("-")
    return slug or "task"


@dataclass
class TaskEntry:
    """One task file as read: the parsed task or the error that stopped it."""

    id: str
    path: Path
    text: str | None
    task: Task | None
    error: TaskFileError | None
    digest: str

    def require(self) -> Task:
        """The task, or raise its file error."""
        if self.task is None:
            assert self.error is not None
            raise self.error
        return self.task


def read_entry(path: Path) -> TaskEntry:
    """Read and parse one task file; never raises for a bad file."""
    from daycare_cli.core.taskfile import parse_task

    task_id = path.name[:-3] if path.name.endswith(".md") else path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"no task file {path.name}", path=str(path)) from None
    except OSError as exc:
        err = TaskFileError(f"cannot read the file: {exc.strerror}", path=str(path))
        return TaskEntry(task_id, path, None, None, err, "")
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
        return TaskEntry(task_id, path, text, None, err, digest)
    try:
        task = parse_task(data, path=str(path), task_id=task_id)
    except TaskFileError as exc:
        return TaskEntry(task_id, path, text, None, exc, digest)
    return TaskEntry(task_id, path, text, task, None, digest)


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


class TaskStore:
    """Task files of one tasks directory."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.dir = paths.tasks_dir

    def files(self) -> list[Path]:
        """Task files, sorted by name."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return [self.dir / n for n in sorted(names) if is_task_file(n)]

    def list(self, *, cached: bool = True) -> list[TaskEntry]:
        """Every task file, parsed, in id order; invalid files included with their error.

        Unchanged files come from the parse cache (`store/taskcache.py`); their entries
        carry no text, so edits go through `load`, which always reads the file.
        """
        files = self.files()
        if not cached:
            return [read_entry(p) for p in files]
        from daycare_cli.store.taskcache import Cached, TaskCache

        cache = TaskCache(self.paths.home, self.dir)
        cache.load()
        found: dict[str, TaskEntry] = {}
        misses: list[tuple[Path, os.stat_result]] = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue  # removed since listed
            hit = cache.get(path.name, st)
            if hit is None:
                misses.append((path, st))
            else:
                task_id = path.name[:-3]
                found[path.name] = TaskEntry(task_id, path, None, hit.task, hit.error, hit.digest)
        for (path, st), entry in zip(misses, read_entries([p for p, _ in misses]), strict=True):
            if entry is None:
                continue
            # The key is the stat taken before reading: a change after it shows next time.
            cache.put(path.name, Cached(stat_key(st), entry.digest, entry.task, entry.error))
            found[path.name] = entry
        cache.retain(set(found))
        cache.save()
        return [found[p.name] for p in files if p.name in found]

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
