"""Honest timing (issue 12): what a run records of when it was written, started and ran.

A run's row says when it was written (`queued_at`), when it actually started
(`started_at`: its task's lock taken and its workspace ready) and when its first block's
interpreter was spawned (`block_started_at`), in microseconds. These tests hold those
instants against what the daemon did: the lock file names its holder and the time it was
taken, read while the run holds it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import DaemonHome

TIMED = (
    "---\ntriggers:\n  - every: 1s\nexecute: true\n---\n"
    "<run_python>\nimport time\ntime.sleep(0.3)\nprint('tick')\n</run_python>\n"
)


class LockWatch:
    """Read a lock file every 2 ms in a thread; keep each distinct (pid, time) it held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                pid, at = self.path.read_text().split()
                holder = (int(pid), float(at))
            except (OSError, ValueError):  # not there yet, or released (emptied)
                holder = None
            if holder is not None and holder not in self.seen:
                self.seen.append(holder)
            time.sleep(0.002)


def test_a_run_starts_after_its_lock_is_taken_and_no_lateness_is_negative(
    daemon: DaemonHome,
) -> None:
    daemon.write("timed", TIMED)
    with LockWatch(daemon.home / "workspaces" / "timed" / ".lock") as watch:
        daemon.start()
        rows = daemon.wait_for(
            lambda: len(r := daemon.runs("timed", status="succeeded")) >= 4 and r,
            20,
            "4 succeeded runs",
        )
    assert daemon.stop() == 0

    assert watch.seen, "the lock file never named a holder"
    assert {pid for pid, _ in watch.seen} == {daemon.pid}
    taken_for: set[float] = set()
    for r in rows:
        slot, queued, started, block = (
            daemon.utc(r[k]) for k in ("slot", "queued_at", "started_at", "block_started_at")
        )
        # Recorded in microseconds: a time cut to milliseconds could read as early.
        for k in ("queued_at", "started_at", "block_started_at"):
            assert len(r[k]) == len("2026-11-30T02:14:07.123456+00:00"), r[k]
        assert r["pid"] == daemon.pid
        # The lock this run took: the last one taken at or before its start. It was taken
        # for this fire (after its slot), by the daemon, and by no other run.
        held = [at for _pid, at in watch.seen if at <= started.timestamp()]
        assert held, f"run {r['id']} started at {started} before any lock was taken"
        locked = datetime.fromtimestamp(max(held), started.tzinfo)
        assert slot <= locked <= started, (slot, locked, started)
        assert max(held) not in taken_for
        taken_for.add(max(held))
        # Row written, run started, first interpreter spawned: in that order, none early.
        assert slot <= queued <= started <= block, (slot, queued, started, block)
        lateness = [(t - slot).total_seconds() for t in (queued, started, block)]
        assert min(lateness) >= 0, lateness
        assert block <= daemon.utc(r["finished_at"])
