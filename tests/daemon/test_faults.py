"""The daemon never stops silently (docs/operations.md, "Faults"; bench/README.md, "The figures").

The real daemon in a subprocess, and real faults: another process holding state.db's
write lock (every write the daemon tries fails with SQLITE_BUSY), a full disk (a small
tmpfs home, as root), too few file descriptors (`prlimit` on the running daemon), and
state.db deleted under it. After each: scheduling goes on with every slot of the fault
recorded, or the daemon exits non-zero; `daemon status` never says the state is healthy
while its writes fail; no run is left `running`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from daycare_cli.client import DaemonClient
from daycare_cli.store.paths import Paths

if TYPE_CHECKING:
    from conftest import DaemonHome

EVERY = "---\ntriggers:\n  - every: 1s\nexecute: false\n{extra}---\ntick\n"


def utc(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def status(home: DaemonHome) -> dict[str, Any] | None:
    """The control API's status JSON, or None when the daemon does not answer."""
    client = DaemonClient(Paths.resolve(home=home.home), timeout=3)
    try:
        return client.status()
    except Exception:
        return None
    finally:
        client.close()


def state_health(home: DaemonHome) -> dict[str, Any] | None:
    """The `state` part of `daemon status --json`: its `healthy` and `error` (the
    supervisor adds `restarts`, `since` and `detail` to every part)."""
    st = status(home)
    if st is None:
        return None
    part = st["parts"]["state"]
    return {"healthy": part["healthy"], "error": part["error"]}


def every_slot_once(rows: list[Any]) -> list[datetime]:
    """The slots of `rows`, asserting each is one second after the previous: none lost,
    none twice."""
    slots = sorted(utc(r["slot"]) for r in rows)
    assert slots, "no runs"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert all(abs(g - 1.0) < 0.01 for g in gaps), gaps
    return slots


def settled(home: DaemonHome, task: str) -> bool:
    return not home.query(
        "SELECT 1 FROM runs WHERE task = ? AND status IN ('queued', 'running')", (task,)
    )


def succeeded_since(home: DaemonHome, task: str, since: datetime) -> int:
    return sum(1 for r in home.runs(task, status="succeeded") if utc(r["started_at"]) > since)


def hold_write_lock(db: Path) -> sqlite3.Connection:
    """Another process's view: a connection holding state.db's write lock until released."""
    other = sqlite3.connect(db, isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")
    return other


# --- state writes failing for a while -------------------------------------------------------


def test_state_locked_for_a_while_is_reported_then_every_slot_of_it_is_recorded(
    daemon: DaemonHome,
) -> None:
    daemon.write("tick", EVERY.format(extra=""))
    daemon.write("hook", "---\ntriggers:\n  - webhook: true\nexecute: false\n---\npush\n")
    daemon.start()
    daemon.wait_for(lambda: len(daemon.runs("tick", status="succeeded")) >= 2, 10, "two runs")
    assert state_health(daemon) == {"healthy": True, "error": None}
    url = daemon.cli("webhook", "url", "hook").stdout.strip()

    other = hold_write_lock(daemon.home / "state.db")
    start = time.monotonic()
    seen: list[tuple[float, dict[str, Any] | None]] = []
    while time.monotonic() - start < 9:
        seen.append((time.monotonic() - start, state_health(daemon)))
        time.sleep(0.25)
    # A webhook is not promised while nothing can be written: 503, try again later.
    refused = post(url)
    other.execute("ROLLBACK")
    other.close()
    released = datetime.now(UTC)

    # Once a write had time to stall (2 s) the status never says healthy, and says why.
    during = [h for t, h in seen if t > 3.0]
    assert during and all(h is not None and not h["healthy"] for h in during), during
    assert any("locked" in (h or {}).get("error", "") for h in during), during
    # Writes work again: scheduling goes on and the status is healthy again.
    daemon.wait_for(lambda: succeeded_since(daemon, "tick", released) >= 2, 15, "new runs")
    daemon.wait_for(lambda: (state_health(daemon) or {}).get("healthy"), 10, "healthy again")
    assert daemon.proc is not None and daemon.proc.poll() is None
    # Every slot of the fault was recorded once written again (and ran, late).
    daemon.wait_for(lambda: settled(daemon, "tick") or None, 10, "runs to settle")
    rows = daemon.runs("tick")
    slots = every_slot_once(rows)
    assert slots[-1] > released
    # A fire during the fault found the run before it still waiting for its row: it is
    # skipped by `overlap: skip`, and says so.
    assert {r["status"] for r in rows} <= {"succeeded", "skipped", "running", "queued"}
    assert all("overlap: skip" in r["skip_reason"] for r in rows if r["status"] == "skipped")
    assert daemon.duplicate_slots() == []
    log = daemon.output()
    assert "cannot write state.db" in log and "work again" in log
    assert "Traceback" not in log
    assert refused[0] == 503 and refused[1].get("Retry-After")
    assert daemon.runs("hook") == []
    assert post(url)[0] == 202  # and accepted again once writes work


def post(url: str) -> tuple[int, dict[str, str]]:
    """POST an empty JSON body; the status and headers of the answer."""
    request = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def test_writes_failing_past_the_limit_exit_non_zero_and_the_restart_catches_up(
    daemon: DaemonHome,
) -> None:
    daemon.config.write_text(daemon.CONFIG + "state_retry_limit = 2\n")
    daemon.write("tick", EVERY.format(extra="catch_up: all\ncatch_up_window: 1h\n"))
    daemon.start()
    daemon.wait_for(lambda: len(daemon.runs("tick", status="succeeded")) >= 2, 10, "two runs")
    other = hold_write_lock(daemon.home / "state.db")
    try:
        code = daemon.wait_exit(30)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code != 0
    log = daemon.output()
    assert "giving up on state.db" in log and "daemon.state_retry_limit" in log
    assert "Traceback" not in log
    # systemd restarts it: the slots it could not record are caught up, none lost.
    restarted = datetime.now(UTC)
    daemon.start()
    daemon.wait_for(lambda: succeeded_since(daemon, "tick", restarted) >= 3, 30, "catch-up")
    daemon.wait_for(lambda: settled(daemon, "tick") or None, 30, "runs to settle")
    rows = daemon.runs("tick")
    every_slot_once(rows)
    assert any(r["trigger"] == "catch-up" for r in rows)
    assert daemon.duplicate_slots() == []


def test_a_deleted_state_db_is_reported_and_the_daemon_exits_non_zero(
    daemon: DaemonHome,
) -> None:
    daemon.write("tick", EVERY.format(extra=""))
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("tick", status="succeeded"), 10, "a run")
    for suffix in ("", "-wal", "-shm"):
        (daemon.home / f"state.db{suffix}").unlink(missing_ok=True)
    code = daemon.wait_exit(15)
    assert code != 0
    log = daemon.output()
    assert f"{daemon.home / 'state.db'} was deleted" in log
    assert "restart the daemon" in log
    # Its writes did not go on into the deleted file: the next start begins a new one.
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("tick", status="succeeded"), 10, "a run")


# --- a full disk ----------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `mount` (root only; skips otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros to `path` until its file system is full."""
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


BLOCK = (
    "---\ntriggers:\n  - every: 1s\nexecute: true\n---\n<run_python>\nprint('hi')\n</run_python>\n"
)


@pytest.fixture
def disk_home(daemon: DaemonHome) -> Iterator[DaemonHome]:
    """The daemon's home on its own 32 MiB tmpfs."""
    with tmpfs(daemon.home, "32m"):
        daemon.tasks.mkdir()  # the mount hides what the fixture made
        daemon.config.write_text(daemon.CONFIG)
        try:
            yield daemon
        finally:
            daemon.stop()


def test_a_full_disk_is_reported_and_every_slot_of_it_is_recorded_after(
    disk_home: DaemonHome,
) -> None:
    home = disk_home
    home.write("tick", BLOCK)
    home.start()
    home.wait_for(lambda: len(home.runs("tick", status="succeeded")) >= 2, 15, "two runs")
    filler = home.home / "filler"
    fill(filler)
    start = time.monotonic()
    seen: list[tuple[float, dict[str, Any] | None]] = []
    while time.monotonic() - start < 6:
        seen.append((time.monotonic() - start, state_health(home)))
        time.sleep(0.25)
    filler.unlink()
    freed = datetime.now(UTC)
    during = [h for t, h in seen if t > 2.5]
    assert during and all(h is not None and not h["healthy"] for h in during), during
    assert any("full" in (h or {}).get("error", "") for h in during), during
    home.wait_for(lambda: succeeded_since(home, "tick", freed) >= 2, 20, "runs again")
    home.wait_for(lambda: (state_health(home) or {}).get("healthy"), 10, "healthy again")
    home.wait_for(lambda: settled(home, "tick") or None, 20, "runs to settle")
    rows = home.runs("tick")
    every_slot_once(rows)  # none lost: the fires of the fault were written once space was back
    assert {r["status"] for r in rows} <= {"succeeded", "skipped", "failed"}
    log = home.output()
    assert "database or disk is full" in log and "work again" in log
    assert "Traceback" not in log


def test_a_full_workspace_disk_fails_runs_with_the_reason_and_a_bounded_log(
    daemon: DaemonHome,
) -> None:
    with tmpfs(daemon.home / "workspaces", "4m") as disk:
        daemon.write("tick", BLOCK)
        daemon.start()
        daemon.wait_for(lambda: len(daemon.runs("tick", status="succeeded")) >= 2, 15, "runs")
        first_line = len(daemon.lines)
        filler = disk / "filler"
        fill(filler)
        full_at = datetime.now(UTC)
        time.sleep(5)
        filler.unlink()
        freed = datetime.now(UTC)
        daemon.wait_for(lambda: succeeded_since(daemon, "tick", freed) >= 2, 20, "runs again")
        daemon.wait_for(lambda: settled(daemon, "tick") or None, 20, "runs to settle")
        daemon.stop()
    rows = daemon.runs("tick")
    every_slot_once(rows)
    during = [r for r in rows if full_at <= utc(r["queued_at"]) <= freed]
    failed = [r for r in during if r["status"] == "failed"]
    assert len(failed) >= 3, [(r["status"], r["error"]) for r in during]
    assert all("No space left on device" in r["error"] for r in failed)
    assert {r["status"] for r in rows} <= {"succeeded", "failed"}
    fault_log = daemon.lines[first_line:]
    assert "Traceback" not in "\n".join(fault_log)
    assert len(fault_log) <= 3 * len(rows) + 10  # a line or two a run


# --- file descriptors run out -------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_hard(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[4]
    raise AssertionError("no open-file limit in /proc/PID/limits")


def test_fd_exhaustion_ends_runs_with_an_error_and_a_bounded_log(daemon: DaemonHome) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    block = "---\ntriggers:\n  - every: 1s\nexecute: true\noverlap: allow\n---\n"
    block += "<run_python>\nimport time\ntime.sleep(0.8)\nprint('ok')\n</run_python>\n"
    daemon.config.write_text("max_concurrent_runs = 8\n" + daemon.CONFIG)
    for name in ("a", "b", "c"):
        daemon.write(name, block)
    daemon.start()
    daemon.wait_for(lambda: len(daemon.runs("a", status="succeeded")) >= 2, 15, "two runs")
    first_line = len(daemon.lines)
    # Room for the daemon's own files and a run or two, not for three runs at once.
    # The soft limit only: lowering the hard one could not be undone without privileges.
    limit, hard = open_fds(daemon.pid) + 6, nofile_hard(daemon.pid)
    subprocess.run(["prlimit", f"--pid={daemon.pid}", f"--nofile={limit}:{hard}"], check=True)
    time.sleep(6)
    subprocess.run(["prlimit", f"--pid={daemon.pid}", f"--nofile={hard}:{hard}"], check=True)
    freed = datetime.now(UTC)
    for name in ("a", "b", "c"):
        daemon.wait_for(lambda n=name: succeeded_since(daemon, n, freed) >= 1, 20, "runs again")
        daemon.wait_for(lambda n=name: settled(daemon, n) or None, 20, "runs to settle")
    assert daemon.proc is not None and daemon.proc.poll() is None
    rows = [r for name in ("a", "b", "c") for r in daemon.runs(name)]
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed, "the limit caused no failure: the test proves nothing"
    assert all("Too many open files" in r["error"] for r in failed), [r["error"] for r in failed]
    assert {r["status"] for r in rows} <= {"succeeded", "failed"}
    for name in ("a", "b", "c"):
        every_slot_once(daemon.runs(name))
    fault_log = daemon.lines[first_line:]
    assert "Traceback" not in "\n".join(fault_log)
    assert len(fault_log) < 4 * len(rows) + 20


def test_a_daemon_that_cannot_write_at_start_exits_1_with_the_reason(daemon: DaemonHome) -> None:
    daemon.write("tick", EVERY.format(extra=""))
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("tick", status="succeeded"), 10, "a run")
    assert daemon.stop() == 0
    other = hold_write_lock(daemon.home / "state.db")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "daycare_cli", "daemon", "run"],
            env=daemon.env,
            cwd=daemon.home,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert res.returncode == 1
    assert "cannot write state.db at start: database is locked" in res.stderr
    assert "Traceback" not in res.stderr
    daemon.start()  # and starts once it can
