"""Task files parsed in a forked child while the daemon's start does its other work.

A cold start of 10,000 task files spends most of its time parsing them (~1.2 s of CPU),
and its other work (imports, state.db, the servers) does not need them. So when many
files are not in the parse cache, the start forks one child at its very beginning,
before it has any thread, and the child parses the first part of them while the daemon
imports and opens the rest; the daemon parses the remaining part itself, then reads what
the child wrote. On one core this only costs the hand-over (~0.1 s for 6,000 tasks);
with a second core the parse is shared out. (Worker processes that are spawned, not
forked, cost more than they gave: each imports daycare again.)

The child only reads files and writes one result file; it exits with `os._exit`. A child
that fails, dies or writes nothing useful only means the daemon parses those files
itself; a file that changed since the child read it (its stat differs) is read again.
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
CHILD_SHARE = 0.6  # the child starts first: it takes more than half


T = TypeVar("T")


class Prefetch(Generic[T]):
    """A child reading some task files; `collect` gives what it read."""

    def __init__(self, pid: int, paths: list[Path], out: Path) -> None:
        self.pid = pid
        self.paths = set(paths)
        self.out = out

    @classmethod
    def start(
        cls, paths: list[Path], out_dir: Path, read: Callable[[Path], T]
    ) -> Prefetch[T] | None:
        """Fork a child that reads `paths` with `read` (`store/tasks.py` gives a parse that
        shares the tasks' common parts and drops the text: the daemon has no use for it);
        None when it cannot (threads, no fork). A file `read` raises for is left out."""
        if threading.active_count() != 1 or not hasattr(os, "fork"):
            return None  # a fork with threads may copy a lock some thread holds
        # The parser's modules, imported before the fork: the child imports nothing.
        import hashlib  # noqa: F401

        import daycare_cli.core.taskfile
        import daycare_cli.core.taskshare  # noqa: F401

        try:
            out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(prefix="prefetch-", suffix=".pickle", dir=out_dir)
        except OSError:
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                found = []
                for path in paths:
                    with contextlib.suppress(Exception):  # gone, or else: the daemon reads it
                        found.append((path, read(path)))
                with os.fdopen(fd, "wb") as f:
                    pickle.dump(found, f, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            finally:
                os._exit(code)
        os.close(fd)
        return cls(pid, paths, Path(name))

    def collect(self, *, packed: bool = False) -> dict[Path, T]:
        """Wait for the child; what it read, by path ({} if it failed). `packed`: its
        tasks loaded packed (`store/taskcache.py`, `PackedUnpickler`)."""
        from daycare_cli.store.taskcache import PackedUnpickler

        try:
            _, status = os.waitpid(self.pid, 0)
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                return {}
            with self.out.open("rb") as f:
                found = (PackedUnpickler(f) if packed else pickle.Unpickler(f)).load()
            return {path: value for path, value in found}
        except Exception:  # a dead child, a cut result: the files are read by the daemon
            return {}
        finally:
            with contextlib.suppress(OSError):
                self.out.unlink()

    def discard(self) -> None:
        """Stop the child and remove its result (a start that failed before it took it)."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            self.out.unlink()
