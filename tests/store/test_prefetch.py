"""A daemon start with many new task files parses them in forked children
(store/prefetch.py): the listing is the same as a parse in the process, whatever the
children do.

The daemon forks only while it has no thread, and a test process may have some (left by
other tests): each scenario runs in a fresh interpreter, as the daemon's start does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from daycare_cli.store.paths import Paths
from daycare_cli.store.tasks import TaskStore


def home(tmp_path: Path, n: int = 30) -> TaskStore:
    paths = Paths.resolve(home=tmp_path)
    paths.tasks_dir.mkdir(parents=True)
    for i in range(n):
        body = (
            f"---\nname: Task {i}\nschedule: '{i % 60} 9 * * *'\ntimezone: Asia/Tokyo\n---\nB{i}\n"
        )
        if i % 7 == 3:
            body = f"---\nname: Broken {i}\nshedule: daily\n---\nB{i}\n"  # a file error
        (paths.tasks_dir / f"t{i:02d}.md").write_text(body)
    return TaskStore(paths)


def alone(scenario: str, tmp_path: Path) -> None:
    """Run `scenario` (a function of this file) in a fresh interpreter, with no thread."""
    code = (
        "import runpy, sys, pathlib; "
        f"runpy.run_path({__file__!r})[{scenario!r}](pathlib.Path(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def started(store: TaskStore, tmp_path: Path) -> int:
    assert threading.active_count() == 1
    count = store.prepare(prefetch_dir=tmp_path / "run", min_files=10)
    assert count == 30  # every new file, in the children
    assert store.prefetch is not None
    assert len(store.prefetch.pids) == min(2, len(os.sched_getaffinity(0)))
    return count


def as_listed(store: TaskStore) -> list[tuple[object, ...]]:
    return [(e.id, e.task, str(e.error), e.digest) for e in store.list(defer_save=True)]


def child_pids(store: TaskStore) -> list[int]:
    assert store.prefetch is not None
    return store.prefetch.pids


def test_the_listing_is_the_parse_of_every_file(tmp_path: Path) -> None:
    alone("_the_listing_is_the_parse_of_every_file", tmp_path)


def _the_listing_is_the_parse_of_every_file(tmp_path: Path) -> None:
    store = home(tmp_path)
    expected = [(e.id, e.task, str(e.error), e.digest) for e in store.list(cached=False)]
    started(store, tmp_path)
    entries = store.list(defer_save=True)
    assert [(e.id, e.task, str(e.error), e.digest) for e in entries] == expected
    assert sum(e.error is not None for e in entries) == 4
    # Parts are shared among the child's tasks and among the daemon's own.
    tasks = [e.task for e in entries if e.task is not None]
    assert tasks[0].triggers[0].timezone is None and tasks[0].timezone is tasks[1].timezone
    assert not list((tmp_path / "run").iterdir())  # the child's result file is gone
    # The cache is whole: the next start parses nothing.
    store.save_cache(sleep=lambda _s: True)
    again = TaskStore(store.paths).list()
    assert [e.text for e in again] == [None] * 30


def test_a_file_changed_after_the_child_read_it_is_read_again(tmp_path: Path) -> None:
    alone("_a_file_changed_after_the_child_read_it_is_read_again", tmp_path)


def _a_file_changed_after_the_child_read_it_is_read_again(tmp_path: Path) -> None:
    store = home(tmp_path)
    started(store, tmp_path)
    for pid in child_pids(store):  # they have read them all
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    path = store.dir / "t00.md"
    path.write_text(path.read_text().replace("Task 0", "Changed 0!"))
    entries = {e.id: e for e in store.list(defer_save=True)}
    assert entries["t00"].task is not None and entries["t00"].task.name == "Changed 0!"
    assert entries["t01"].task is not None and entries["t01"].task.name == "Task 1"


def test_a_child_that_dies_leaves_the_parse_to_the_daemon(tmp_path: Path) -> None:
    alone("_a_child_that_dies_leaves_the_parse_to_the_daemon", tmp_path)


def _a_child_that_dies_leaves_the_parse_to_the_daemon(tmp_path: Path) -> None:
    store = home(tmp_path)
    expected = [(e.id, e.task, str(e.error), e.digest) for e in store.list(cached=False)]
    started(store, tmp_path)
    os.kill(child_pids(store)[-1], signal.SIGKILL)  # the other child's part is still used
    assert as_listed(store) == expected


def test_few_files_or_a_parse_cache_mean_no_child(tmp_path: Path) -> None:
    store = home(tmp_path, n=5)
    assert store.prepare(prefetch_dir=tmp_path / "run") == 0  # fewer than 1,000
    assert len(store.list()) == 5
    big = home(tmp_path / "big")
    big.list()  # the cache is written: a restart
    assert big.prepare(prefetch_dir=tmp_path / "run", min_files=10) == 0


def test_a_start_that_fails_before_the_listing_leaves_no_child_or_file(tmp_path: Path) -> None:
    alone("_a_start_that_fails_before_the_listing_leaves_no_child_or_file", tmp_path)


def _a_start_that_fails_before_the_listing_leaves_no_child_or_file(tmp_path: Path) -> None:
    store = home(tmp_path)
    started(store, tmp_path)
    pids = child_pids(store)
    assert len(list((tmp_path / "run").glob("prefetch-*"))) == len(pids)
    assert store.prefetch is not None
    store.prefetch.discard()
    assert not list((tmp_path / "run").glob("prefetch-*"))
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # reaped: nothing left
        else:
            raise AssertionError(f"the child {pid} was not reaped")
