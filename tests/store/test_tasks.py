"""Reading task files from disk: the size cap, odd file types, and reading only settled files.

`read_settled` takes its clock and its sleep as arguments: here time passes only inside
`sleep`, which is also where the "other writer" (an editor writing in two chunks) acts,
so every interleaving is exact. File times are set with `os.utime` to the virtual clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daycare_cli.core.errors import NotFoundError
from daycare_cli.core.taskfile import MAX_FILE_BYTES
from daycare_cli.store.paths import Paths
from daycare_cli.store.taskcache import stat_key
from daycare_cli.store.tasks import TaskEntry, TaskStore, read_entry, read_settled

FULL = '---\nname: Full\ntriggers:\n  - every: 1h\nexecute: true\n---\n<run_python>\nprint("all of it")\n</run_python>\n'  # noqa: E501
HALF = FULL[: len(FULL) // 2]  # ends inside the frontmatter: "frontmatter is not closed"
QUIET = 0.1
START_NS = 1_700_000_000 * 10**9


class Clock:
    """Virtual time that moves only in `sleep`, where `on_sleep` may act on the files."""

    def __init__(self, on_sleep: Callable[[Clock], None] | None = None) -> None:
        self.ns = START_NS
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def now_ns(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.ns += int(seconds * 1e9)
        if self.on_sleep is not None:
            self.on_sleep(self)

    def write(self, path: Path, text: str, *, age: float = 0.0) -> None:
        """Write `text` with an mtime `age` seconds before the virtual now."""
        path.write_text(text)
        stamp = self.ns - int(age * 1e9)
        os.utime(path, ns=(stamp, stamp))


def settle(clock: Clock, *paths: Path, limit: float = 1.0) -> tuple[dict[str, str], list[str]]:
    """read_settled on the virtual clock: ({id: task name or error}, [gone ids])."""
    found = read_settled(paths, QUIET, limit=limit, now_ns=clock.now_ns, sleep=clock.sleep)
    names = {
        e.id: (e.task.name if e.task else f"error: {e.error.message if e.error else ''}")
        for e in found.entries.values()
    }
    assert set(found.unsettled).isdisjoint(found.entries)
    return names, [p.name[:-3] for p in found.gone]


def test_a_file_written_long_ago_is_read_at_once(tmp_path: Path) -> None:
    clock = Clock()
    clock.write(tmp_path / "a.md", FULL, age=5)
    assert settle(clock, tmp_path / "a.md") == ({"a": "Full"}, [])
    assert clock.sleeps == []


def test_a_fresh_file_is_read_once_it_has_been_quiet(tmp_path: Path) -> None:
    clock = Clock()
    clock.write(tmp_path / "a.md", FULL, age=0.03)
    assert settle(clock, tmp_path / "a.md") == ({"a": "Full"}, [])
    assert clock.sleeps == [0.07]  # the rest of the quiet period, no more


def test_a_two_chunk_write_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    chunks = [FULL[len(HALF) :]]

    def second_chunk(clock: Clock) -> None:
        if chunks:  # the writer pauses ~ a debounce, then appends the rest
            with path.open("a") as f:
                f.write(chunks.pop())
            os.utime(path, ns=(clock.ns, clock.ns))

    clock = Clock(second_chunk)
    clock.write(path, HALF)
    assert settle(clock, path) == ({"a": "Full"}, [])
    assert clock.sleeps == [QUIET, QUIET]  # waited again after the second chunk


def test_a_file_written_again_while_it_is_read_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    clock = Clock()
    clock.write(path, HALF, age=5)  # looks settled...
    reads: list[TaskEntry] = []

    def read_racing_a_writer(p: Path) -> TaskEntry:
        entry = read_entry(p)
        if not reads:  # ...but the writer finishes right after the first read
            clock.write(p, FULL)
        reads.append(entry)
        return entry

    found = read_settled(
        [path], QUIET, read=read_racing_a_writer, now_ns=clock.now_ns, sleep=clock.sleep
    )
    assert [e.task is None for e in reads] == [True, False]  # the half file was not used
    assert found.entries[path].task is not None
    assert found.entries[path].task.name == "Full"  # type: ignore[union-attr]
    assert found.entries[path].key == stat_key(path.stat())
    assert clock.sleeps == [QUIET]


def test_a_file_that_keeps_changing_is_left_for_its_next_change(tmp_path: Path) -> None:
    path = tmp_path / "busy.md"
    other = tmp_path / "calm.md"

    def keep_writing(clock: Clock) -> None:
        clock.write(path, FULL + f"{clock.ns}\n")

    clock = Clock(keep_writing)
    clock.write(path, FULL)
    clock.write(other, FULL, age=5)
    found = read_settled([path, other], QUIET, limit=1.0, now_ns=clock.now_ns, sleep=clock.sleep)
    assert found.unsettled == [path]
    assert list(found.entries) == [other]
    assert 9 <= len(clock.sleeps) <= 11  # gave up after about `limit`, not before


def test_a_file_deleted_while_waiting_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    clock = Clock(lambda _: path.unlink(missing_ok=True))
    clock.write(path, FULL)
    assert settle(clock, path, tmp_path / "never.md") == ({}, ["never", "a"])


def test_a_file_with_an_mtime_in_the_future_settles_after_one_quiet_period(
    tmp_path: Path,
) -> None:
    clock = Clock()
    clock.write(tmp_path / "a.md", FULL, age=-3600)
    assert settle(clock, tmp_path / "a.md") == ({"a": "Full"}, [])
    assert clock.sleeps == [QUIET]


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.md"
    with path.open("wb") as f:
        f.write(b"---\nname: huge\n---\n")
        f.truncate(64 * MAX_FILE_BYTES)  # 64 MiB, sparse
    entry = read_entry(path)
    assert entry.task is None and entry.error is not None
    assert entry.error.message == "the file is over 1 MiB, the limit for a task file"
    assert entry.error.line == 4
    assert entry.text is not None and len(entry.text) == MAX_FILE_BYTES + 1


def test_a_fifo_or_directory_named_like_a_task_is_an_error_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.md")
    (tmp_path / "dir.md").mkdir()
    done: list[TaskEntry] = []
    reader = threading.Thread(
        target=lambda: done.extend(read_entry(tmp_path / n) for n in ("fifo.md", "dir.md")),
        daemon=True,
    )
    reader.start()
    reader.join(5)
    assert len(done) == 2, "reading a FIFO blocked"
    fifo, directory = done
    assert fifo.error is not None and "not a regular file" in fifo.error.message
    assert directory.error is not None and "it is a directory" in directory.error.message
    with pytest.raises(NotFoundError):
        read_entry(tmp_path / "missing.md")


def test_the_cache_keys_an_entry_by_the_version_it_parsed(tmp_path: Path) -> None:
    paths = Paths.resolve(home=tmp_path)
    paths.tasks_dir.mkdir(parents=True)
    path = paths.tasks_dir / "a.md"
    path.write_text(FULL)
    old = time.time() - 3600
    os.utime(path, (old, old))
    (entry,) = TaskStore(paths).list()
    assert entry.key == stat_key(path.stat())
    (again,) = TaskStore(paths).list()  # from the cache, with the same parse
    assert again.text is None and again.task == entry.task
