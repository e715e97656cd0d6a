"""One run's directory (`workspaces/<task>/runs/<run-id>/`, docs/operations.md, "Where things
live"): its paths, making
it, its log, its files.

The filesystem calls here can take milliseconds on a busy disk, so the runner calls the
slow ones (`prepare`, `close`, `write_file`, `remove_dirs`) off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


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


async def write_file(path: Path, text: str) -> None:
    """Write a run's file off the loop."""
    await asyncio.to_thread(path.write_text, text, "utf-8")


def remove_dirs(paths: list[str]) -> None:
    """Delete the directories of runs that retention removed (blocking; call off the loop)."""
    for path in paths:
        if path:
            shutil.rmtree(path, ignore_errors=True)
