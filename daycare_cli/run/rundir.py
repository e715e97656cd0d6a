"""One run's directory (`workspaces/<task>/runs/<run-id>/`, docs/operations.md, "Where things
live"): its paths, making it (with the task's lock: the run's set-up), undoing that for a
run that does not start, its log, its files.

The filesystem calls here can take milliseconds on a busy disk, so the runner calls the
slow ones (`prepare`, `close`, `write_file`, `remove_dirs`) off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from daycare_cli.store.paths import LockBusy, TaskLock

if TYPE_CHECKING:
    from daycare_cli.run.sandbox import Spare


@dataclass
class RunContext:
    """Paths of one run's directory and its log (`log.jsonl`, open while the run runs)."""

    run_id: str
    workspace: Path
    run_dir: Path
    files_dir: Path
    artifacts_dir: Path
    log_path: Path
    secrets: list[str] = field(default_factory=list)
    log: TextIO | None = None
    # Bytes under files/ and artifacts/ when the run started (runs with blocks): what the
    # blocks add is held against `sandbox.disk`.
    disk_before: int | None = None
    block_started_at: datetime | None = None  # when its first block was spawned
    places: list[Path] | None = None  # daycare's own places, found with the set-up
    # Its first block's sandbox, started before its slot (daemon/ahead.py), until the
    # blocks take it; whoever holds it last ends it.
    ahead: asyncio.Future[Spare | None] | None = None
    # Set up before its slot (daemon/ahead.py: directory, log, disk count, places): that
    # set-up, under way or done; the lock is left for the run to take.
    ready: asyncio.Future[LockBusy | None] | None = None
    # `close` runs in a worker thread: a line logged meanwhile must not meet a half-closed file.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def of(cls, workspace: Path, run_id: str) -> RunContext:
        """The paths of a run of the task whose workspace this is (nothing is created)."""
        run_dir = workspace / "runs" / run_id
        return cls(
            run_id=run_id,
            workspace=workspace,
            run_dir=run_dir,
            files_dir=workspace / "files",
            artifacts_dir=run_dir / "artifacts",
            log_path=run_dir / "log.jsonl",
        )

    def prepare(self, payload: bytes | None) -> None:
        """Make the run's directories and its memory file, write the webhook payload, and
        open the run's log (kept open for the run: one open, not one per event)."""
        for d in (self.files_dir, self.artifacts_dir):
            d.mkdir(parents=True, exist_ok=True)
        memory = self.workspace / "memory.md"
        if not memory.exists():
            memory.touch()
        if payload is not None:
            (self.run_dir / "payload.json").write_bytes(payload)
        self.log = self.log_path.open("a", encoding="utf-8")

    def lock_and_prepare(
        self, lock: TaskLock | None, payload: bytes | None, measure: bool
    ) -> LockBusy | None:
        """Take the task's lock (when given) and prepare the run's directory, counting the
        disk its blocks may add to (`measure`): a run's whole set-up in one worker thread.

        Returns LockBusy, with nothing prepared, when another process holds the lock.
        """
        if lock is not None:
            try:
                lock.acquire(0.0)
            except LockBusy as busy:
                return busy
        self.prepare(payload)
        if measure:
            self.disk_before = disk_usage([self.files_dir, self.artifacts_dir])
        return None

    def note_block_started(self, at: datetime) -> None:
        """Remember when the run's first block was spawned."""
        if self.block_started_at is None:
            self.block_started_at = at

    def discard(self) -> None:
        """Close the log and remove the run's directory: the run did not start."""
        self.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def log_line(self, line: str, *, flush: bool = False) -> None:
        """Append one line to the run's log; a full disk loses the line, not the run."""
        with self._lock, contextlib.suppress(OSError):
            if self.log is not None:
                self.log.write(line + "\n")
                if flush:
                    self.log.flush()
            else:  # before `prepare` opened it, or after `close`
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")

    def close(self) -> None:
        """Write out and close the run's log (idempotent)."""
        with self._lock:
            if self.log is not None:
                with contextlib.suppress(OSError):
                    self.log.close()
                self.log = None


def undo_set_up(prepared: asyncio.Future[LockBusy | None], ctx: RunContext, lock: TaskLock) -> None:
    """A run that will not start: once its set-up thread is done, release the lock it
    took and remove the directory it made (off the loop). Never waits."""

    def done(_: asyncio.Future[LockBusy | None]) -> None:
        lock.release()
        asyncio.get_running_loop().run_in_executor(None, ctx.discard)

    prepared.add_done_callback(done)


def try_lock(lock: TaskLock) -> LockBusy | None:
    """Take a task lock if it is free (an flock that never waits: fine on the loop)."""
    try:
        lock.acquire(0.0)
    except LockBusy as busy:
        return busy
    return None


async def acquire_lock(lock: TaskLock, wait: float) -> None:
    """Take a task lock, polling up to `wait` s without a thread, so cancelling the wait
    can never leave a lock taken behind the caller's back."""
    deadline = time.monotonic() + wait
    while (busy := try_lock(lock)) is not None:
        if time.monotonic() >= deadline:
            raise busy
        await asyncio.sleep(0.05)


async def write_file(path: Path, text: str) -> None:
    """Write a run's file off the loop."""
    await asyncio.to_thread(path.write_text, text, "utf-8")


def remove_dirs(paths: list[str]) -> None:
    """Delete the directories of runs that retention removed (blocking; call off the loop)."""
    for path in paths:
        if path:
            shutil.rmtree(path, ignore_errors=True)


def disk_usage(roots: list[Path]) -> int:
    """Bytes on disk under `roots` (allocated blocks; links not followed). Blocking: a
    workspace may hold many files, so the runner calls it off the loop."""
    total = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
