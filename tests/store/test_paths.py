"""Locations, atomic writes and the per-task lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daycare_cli.store.paths import LockBusy, Paths, TaskLock, atomic_write


def test_an_overridden_home_is_self_contained(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DAYCARE_CONFIG", raising=False)
    monkeypatch.delenv("DAYCARE_TASKS_DIR", raising=False)
    paths = Paths.resolve(home=tmp_path)
    assert paths.config_file == tmp_path / "config.toml"
    assert paths.socket == tmp_path / "run" / "daycare.sock"
    assert paths.tasks_dir == tmp_path / "tasks"
    assert paths.workspace("x") == tmp_path / "workspaces" / "x"


def test_atomic_write_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.md"
    atomic_write(target, "one", mode=0o600)
    atomic_write(target, "two")
    assert target.read_text() == "two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.md"]


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path.write_text(f"{dead.stdout.strip()} 1700000000.000\n")
    lock = TaskLock(path)
    lock.acquire()
    assert path.read_text().split()[0] == str(os.getpid())
    lock.release()


def test_a_live_holder_is_obeyed_and_named(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from daycare_cli.store.paths import TaskLock; "
            f"TaskLock(__import__('pathlib').Path({str(path)!r})).acquire(); "
            "print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(LockBusy) as busy:
            TaskLock(path).acquire(wait=0.3)
        assert busy.value.holder_pid == holder.pid
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    lock = TaskLock(path)
    lock.acquire(wait=2)  # the holder died: its flock went with it
    lock.release()
