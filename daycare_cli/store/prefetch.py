"""Task files parsed in forked children while the daemon's start does its other work.

A cold start of 10,000 task files spends most of its time parsing them (~1.2 s of CPU),
and its other work (imports, state.db, the servers) does not need them. So when many
files are not in the parse cache, the start forks children at its very beginning,
before it has any thread (one per usable CPU, two at most), which parse every file
between them while the daemon imports and opens the rest; then it reads what they
wrote. On one core this only costs the hand-over (~0.1 s for 10,000 tasks); with two,
the parse is shared out, and the daemon itself never holds a parse's garbage: what it
reads back are the plan's compact task heads (`core/taskhead.py`), ~3 MB less RSS at
ready than parsing a share itself. (Worker processes that are spawned, not forked, cost
more than they gave: each imports daycare again.)

A child only reads files and writes one result file; it exits with `os._exit`. A child
that fails, dies or writes nothing useful only means the daemon parses its files
itself; a file that changed since a child read it (its stat differs) is read again.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

MIN_FILES = 1000  # fewer new files than this: no child (a fork costs ~10 ms)
MAX_CHILDREN = 2  # more would only share the same cores with the daemon's start


T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Prefetch(Generic[T]):
    """Children reading task files; `collect` gives what they read."""

    def __init__(self, children: list[tuple[int, Path]], names: list[str]) -> None:
        self.children = children  # (pid, result file) of each
        self.names = set(names)

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [pid for pid, _ in self.children]

    @classmethod
    def start(
        cls, names: list[str], out_dir: Path, read: Callable[[str], T], *, children: int = 1
    ) -> Prefetch[T] | None:
        """Fork `children` children that read the files `names` with `read` between them,
        each a consecutive part (`store/tasks.py` gives a parse that shares the tasks' common
        parts and drops the text: the daemon has no use for it); None when it cannot
        (threads, no fork). A file `read` raises for is left out."""
        if threading.active_count() != 1 or not hasattr(os, "fork"):
            return None  # a fork with threads may copy a lock some thread holds
        # The parser's modules, imported before the fork: the children import nothing.
        import hashlib  # noqa: F401

        import daycare_cli.core.taskfile
        import daycare_cli.core.taskshare  # noqa: F401

        n = len(names)
        parts = [names[k * n // children : (k + 1) * n // children] for k in range(children)]
        started: list[tuple[int, Path]] = []
        covered: list[str] = []
        for part in parts:
            if not part:
                continue
            try:
                out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd, name = tempfile.mkstemp(prefix="prefetch-", suffix=".pickle", dir=out_dir)
            except OSError:
                break
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # a child
                _child(part, fd, read)
            os.close(fd)
            started.append((pid, Path(name)))
            covered += part
        return cls(started, covered) if started else None

    def collect(self, *, packed: bool = False) -> dict[str, T]:
        """Wait for the children; what they read, by name (nothing of one that failed).
        `packed`: tasks loaded as heads (`store/taskcache.py`, `PackedUnpickler`)."""
        from daycare_cli.store.taskcache import PackedUnpickler

        found: dict[str, T] = {}
        for pid, out in self.children:
            try:
                _, status = os.waitpid(pid, 0)
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                    with out.open("rb") as f:
                        part = (PackedUnpickler(f) if packed else pickle.Unpickler(f)).load()
                    found.update(part)
            except Exception:  # a dead child, a cut result: its files are read by the daemon
                pass
            finally:
                with contextlib.suppress(OSError):
                    out.unlink()
        return found

    def discard(self) -> None:
        """Stop the children and remove their results (a start that failed first)."""
        for pid, out in self.children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                out.unlink()


def _child(names: list[str], fd: int, read: Callable[[str], T]) -> None:
    """A child's work: read the files `names`, pickle what it read to `fd`, exit."""
    code = 1
    try:
        found = []
        for name in names:
            with contextlib.suppress(Exception):  # gone, or else: the daemon reads it
                found.append((name, read(name)))
        with os.fdopen(fd, "wb") as f:
            pickle.dump(found, f, protocol=pickle.HIGHEST_PROTOCOL)
        code = 0
    finally:
        os._exit(code)
