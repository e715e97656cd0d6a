"""The parse cache of task files: used for unchanged files, never for changed ones."""

from __future__ import annotations

import os
import time
from pathlib import Path

from daycare_cli.store.paths import Paths
from daycare_cli.store.tasks import TaskStore

HOUR_AGO = time.time() - 3600


def store_with(tmp_path: Path, files: dict[str, str]) -> TaskStore:
    paths = Paths.resolve(home=tmp_path)
    paths.tasks_dir.mkdir(parents=True)
    for name, text in files.items():
        path = paths.tasks_dir / name
        path.write_text(text)
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    return TaskStore(paths)


def names(store: TaskStore) -> dict[str, str | None]:
    return {e.id: (e.task.name if e.task else None) for e in store.list()}


def test_an_unchanged_file_is_served_from_the_cache(tmp_path: Path) -> None:
    store = store_with(tmp_path, {"a.md": "---\nname: Alpha\n---\nx\n"})
    assert names(store) == {"a": "Alpha"}
    path = store.dir / "a.md"
    # Same size, same inode, same mtime: indistinguishable, so the cache answers. This is
    # how we can see the cache is used at all.
    with path.open("r+b") as f:  # in place: same inode
        f.write(path.read_bytes().replace(b"Alpha", b"Blpha"))
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    assert names(store) == {"a": "Alpha"}
    assert names(TaskStore(store.paths)) == {"a": "Alpha"}
    assert store.list(cached=False)[0].task.name == "Blpha"  # type: ignore[union-attr]


def test_a_real_edit_is_seen_at_once(tmp_path: Path) -> None:
    store = store_with(tmp_path, {"a.md": "---\nname: Alpha\n---\nx\n"})
    assert names(store) == {"a": "Alpha"}
    (store.dir / "a.md").write_text("---\nname: Gamma\n---\nx\n")  # same size, new mtime
    assert names(store) == {"a": "Gamma"}
    # A second same-size edit within the file-time granularity is still seen: files
    # modified within 2 s of the cache write are never trusted.
    (store.dir / "a.md").write_text("---\nname: Delta\n---\nx\n")
    assert names(store) == {"a": "Delta"}


def test_errors_are_cached_with_their_position(tmp_path: Path) -> None:
    store = store_with(tmp_path, {"bad.md": "---\nname: x\nshedule: '* * * * *'\n---\nx\n"})
    first = store.list()[0].error
    again = TaskStore(store.paths).list()[0].error
    assert first is not None and again is not None
    assert (again.line, again.col, again.hint) == (first.line, first.col, first.hint)
    assert "schedule" in str(again)


def test_deleted_files_and_a_corrupt_cache(tmp_path: Path) -> None:
    store = store_with(tmp_path, {"a.md": "A\n", "b.md": "B\n"})
    assert set(names(store)) == {"a", "b"}
    (store.dir / "b.md").unlink()
    assert set(names(store)) == {"a"}
    for cache in (tmp_path / "cache").iterdir():
        cache.write_bytes(b"not a pickle")
    assert set(names(TaskStore(store.paths))) == {"a"}


def test_a_file_removed_while_listing_is_left_out(tmp_path: Path) -> None:
    from daycare_cli.store.tasks import read_entries

    store = store_with(tmp_path, {"a.md": "A\n"})
    entries = read_entries([store.dir / "a.md", store.dir / "gone.md"])
    assert entries[0] is not None and entries[0].id == "a"
    assert entries[1] is None


def test_a_racily_clean_file_with_the_same_content_is_not_parsed_again(tmp_path: Path) -> None:
    store = store_with(tmp_path, {"a.md": "---\nname: Alpha\n---\nx\n"})
    path = store.dir / "a.md"
    now = time.time()
    os.utime(path, (now, now))  # modified just before the cache write: racily clean
    assert store.list()[0].text is not None  # parsed: entries from a read carry the text
    # Still racy for this cache write, but the content's digest matches: the cached parse
    # is used (cache entries carry no text), not a new parse.
    assert store.list()[0].text is None
    # The same size and mtime with other content is parsed again.
    with path.open("r+b") as f:  # in place: same inode
        f.write(path.read_bytes().replace(b"Alpha", b"Blpha"))
    os.utime(path, (now, now))
    assert names(store) == {"a": "Blpha"}


def test_a_deferred_save_confirms_racy_entries_once(tmp_path: Path) -> None:
    from daycare_cli.store.taskcache import RACY_NS, TaskCache

    store = store_with(tmp_path, {"a.md": "---\nname: Alpha\n---\nx\n", "b.md": "B\n"})
    # Written just now (a daemon started right after the files): racily clean.
    recent = time.time() - RACY_NS / 1e9 + 0.2
    for name in ("a.md", "b.md"):
        os.utime(store.dir / name, (recent, recent))
    assert names(TaskStore(store.paths)) == {"a": "Alpha", "b": None}
    deferred = TaskStore(store.paths)
    assert [e.text for e in deferred.list(defer_save=True)] == [None, None]  # from the cache
    assert deferred.unsaved is not None
    # b.md changes in place between the start's read and the save (same size and mtime).
    path = store.dir / "b.md"
    with path.open("r+b") as f:
        f.write(b"C")
    os.utime(path, (recent, recent))
    waited: list[float] = []

    def sleep(seconds: float) -> bool:
        waited.append(seconds)
        time.sleep(seconds)
        return False

    assert deferred.save_cache(sleep=sleep) == 1  # a.md confirmed by its digest
    assert waited and 0 < waited[0] < 0.5  # until the files were no longer racy
    cache = TaskCache(store.paths.home, store.dir)
    cache.load()
    hit, trusted = cache.lookup("a.md", (store.dir / "a.md").stat())
    assert hit is not None and trusted  # the next start reads it by its stat alone
    assert "b.md" not in cache.entries  # changed since its parse: parsed again next time
    entries = TaskStore(store.paths).list()
    assert [e.text for e in entries] == [None, "C\n"]  # a from the cache, b parsed


def test_a_deferred_save_cut_short_writes_the_cache_as_read(tmp_path: Path) -> None:
    store = store_with(tmp_path, {"a.md": "---\nname: Alpha\n---\nx\n"})
    now = time.time()
    os.utime(store.dir / "a.md", (now, now))
    deferred = TaskStore(store.paths)
    assert deferred.list(defer_save=True)[0].text is not None  # parsed, nothing cached yet
    assert not list((tmp_path / "cache").glob("tasks-*"))
    assert deferred.save_cache(sleep=lambda _s: True) == 0  # the daemon stops meanwhile
    # Written, still racy: the next read checks the digest instead of parsing.
    assert TaskStore(store.paths).list()[0].text is None


def test_a_cache_in_many_chunks_keeps_shared_parts_and_a_cut_one_is_not_used(
    tmp_path: Path,
) -> None:
    from daycare_cli.store import taskcache

    text = "---\nname: N{i}\nschedule: '5 9 * * *'\ntimezone: Asia/Tokyo\n---\nB{i}\n"
    n = taskcache.CHUNK * 2 + 7  # three chunks
    store = store_with(tmp_path, {f"t{i:04d}.md": text.format(i=i) for i in range(n)})
    first = store.list()
    cache = taskcache.TaskCache(store.paths.home, store.dir)
    cache.load()
    assert len(cache.entries) == n
    tasks = [cache.entries[f"t{i:04d}.md"].task for i in (0, n - 1)]  # first and last chunk
    assert tasks[0] is not None and tasks[1] is not None
    assert tasks[0].triggers is tasks[1].triggers  # written once by the one pickler
    assert [e.task for e in TaskStore(store.paths).list()] == [e.task for e in first]
    # Cut before its end: not a shorter cache, no cache (every file is read again).
    data = cache.path.read_bytes()
    cache.path.write_bytes(data[: len(data) - 40])
    cut = taskcache.TaskCache(store.paths.home, store.dir)
    cut.load()
    assert cut.entries == {}
    again = TaskStore(store.paths).list()
    assert [e.task for e in again] == [e.task for e in first] and again[0].text is not None
