"""A scheduled fire's first block starts in a sandbox started before the slot
(daemon/ahead.py): the run is written with the id drawn then, the block's code goes to
the interpreter waiting since, and what was made ready for a fire that does not use it
is ended, with nothing left behind."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import DaemonHome

# The block reports how long its interpreter has been alive, and its run as it sees it.
REPORT = """
import json, os
with open("/proc/self/stat") as f:
    start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
with open("/proc/uptime") as f:
    uptime = float(f.read().split()[0])
print(json.dumps({"age": uptime - start_ticks / os.sysconf("SC_CLK_TCK"),
                  "env_run": os.environ["DAYCARE_RUN_ID"], "run": run["id"],
                  "mark": os.environ.get("MARK")}))
"""


def _task(trigger: str, mark: str, body: str = REPORT) -> str:
    return (
        f"---\ntriggers:\n  - {trigger}\nexecute: true\nenv:\n  MARK: {mark}\n---\n"
        f"<run_python>\n{body}\n</run_python>\n"
    )


def _alive_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


def _run_dirs(daemon: DaemonHome, task: str) -> set[str]:
    runs = daemon.home / "workspaces" / task / "runs"
    return {p.name for p in runs.iterdir()} if runs.exists() else set()


def test_a_scheduled_first_block_runs_in_a_sandbox_started_before_its_slot(
    daemon: DaemonHome,
) -> None:
    mark = f"m{uuid.uuid4().hex}"
    daemon.write("early", _task("every: 1s", mark))
    daemon.start()
    rows = daemon.wait_for(
        lambda: len(r := daemon.runs("early", status="succeeded")) >= 4 and r, 20, "4 runs"
    )
    assert daemon.stop() == 0
    seen = [json.loads(r["output"]) for r in rows]
    for r, s in zip(rows, seen, strict=True):
        # Planned with the id the row was then written with.
        assert s["env_run"] == s["run"] == r["id"]
        assert s["mark"] == mark
        assert daemon.utc(r["started_at"]) <= daemon.utc(r["block_started_at"])
    # Every fire after the first (which may come less than a second after the start)
    # found its interpreter started about a second before.
    ages = [s["age"] for s in seen[1:]]
    assert all(age >= 0.5 for age in ages), ages
    # Nothing was left running, and every run directory belongs to a run.
    assert _alive_with(mark) == []
    assert _run_dirs(daemon, "early") == {r["id"] for r in daemon.runs("early")}


def test_a_sandbox_started_for_a_task_edited_before_its_slot_is_not_used(
    daemon: DaemonHome,
) -> None:
    """The task changes after its sandbox was started: the fire runs the new version in a
    sandbox of its own, and the one started for the old version is ended."""
    old, new = f"old{uuid.uuid4().hex}", f"new{uuid.uuid4().hex}"
    daemon.start()
    at = daemon.iso_in(3.0)
    path = daemon.write("edited", _task(f'at: "{at}"', old))
    daemon.wait_for(lambda: _alive_with(old), 10, "the sandbox started ahead")
    path.write_text(_task(f'at: "{at}"', new))
    row = daemon.wait_for(
        lambda: (r := daemon.runs("edited")) and r[0]["status"] == "succeeded" and r[0],
        15,
        "the run",
    )
    seen = json.loads(row["output"])
    assert seen["mark"] == new and seen["env_run"] == row["id"]
    assert seen["age"] < 0.9, seen  # started at the slot, not the old one's
    daemon.wait_for(lambda: _alive_with(old) == [], 5, "the old sandbox ended")
    assert daemon.stop() == 0
    assert _run_dirs(daemon, "edited") == {row["id"]}


def test_a_sandbox_started_for_a_fire_that_never_comes_is_ended(daemon: DaemonHome) -> None:
    """The task is deleted between its sandbox's start and its slot: the sandbox is
    ended and the run directory made for it removed; no run is recorded."""
    mark = f"gone{uuid.uuid4().hex}"
    daemon.start()
    path = daemon.write("gone", _task(f'at: "{daemon.iso_in(3.0)}"', mark))
    daemon.wait_for(lambda: _alive_with(mark), 10, "the sandbox started ahead")
    assert _run_dirs(daemon, "gone")  # the directory its run would have used
    path.unlink()
    daemon.wait_for(lambda: _alive_with(mark) == [], 15, "the sandbox ended")
    daemon.wait_for(lambda: not _run_dirs(daemon, "gone"), 5, "its directory removed")
    assert daemon.runs("gone") == []
    assert daemon.stop() == 0


def test_a_daemon_stopping_ends_what_it_started_ahead(daemon: DaemonHome) -> None:
    mark = f"stop{uuid.uuid4().hex}"
    daemon.start()
    daemon.write("later", _task(f'at: "{daemon.iso_in(4.0)}"', mark))
    daemon.wait_for(lambda: _alive_with(mark), 10, "the sandbox started ahead")
    assert daemon.stop() == 0
    assert _alive_with(mark) == []
    assert not _run_dirs(daemon, "later")
    assert daemon.runs("later") == []


def test_a_skipped_fire_ends_its_sandbox(daemon: DaemonHome, tmp_path: Path) -> None:
    """overlap: skip and a run still going: the next fire is recorded skipped, and the
    sandbox started for it is ended."""
    mark = f"skip{uuid.uuid4().hex}"
    body = "import time\ntime.sleep(2.5)\nprint('done')"
    daemon.write(
        "busy", _task("every: 1s", mark, body).replace("execute", "overlap: skip\nexecute")
    )
    daemon.start()
    daemon.wait_for(lambda: daemon.runs("busy", status="skipped"), 15, "a skipped fire")
    daemon.wait_for(lambda: daemon.runs("busy", status="succeeded"), 15, "a finished run")
    assert daemon.stop() == 0
    assert _alive_with(mark) == []
    # A skipped fire keeps no directory, the one made for its sandbox included.
    ran = {r["id"] for r in daemon.runs("busy") if r["status"] != "skipped"}
    assert _run_dirs(daemon, "busy") == ran


def test_no_more_sandboxes_start_ahead_than_runs_may_run_at_once(daemon: DaemonHome) -> None:
    """Six tasks due in the same instant, `max_concurrent_runs = 2`: before the slot, the
    sandboxes of two of them wait; every fire still runs."""
    daemon.config.write_text("max_concurrent_runs = 2\n" + daemon.CONFIG)
    daemon.start()
    at = daemon.iso_in(3.0)
    marks = [f"cap{i}{uuid.uuid4().hex}" for i in range(6)]
    for i, mark in enumerate(marks):
        daemon.write(f"due-{i}", _task(f'at: "{at}"', mark))
    daemon.wait_for(lambda: any(_alive_with(m) for m in marks), 10, "a sandbox started ahead")
    started = 0
    while daemon.utc(at).timestamp() - time.time() > 0.1:  # the second before the slot
        started = max(started, sum(bool(_alive_with(m)) for m in marks))
        time.sleep(0.02)
    assert started == 2
    daemon.wait_for(lambda: len(r := daemon.runs(status="succeeded")) == 6 and r, 30, "six runs")
    assert daemon.stop() == 0
    assert not any(_alive_with(m) for m in marks)


def test_a_fire_finds_its_directory_made_ready_ahead_and_takes_its_lock_at_the_slot(
    daemon: DaemonHome,
) -> None:
    """The second before the slot the run's directory and its log exist (made ahead, off
    the loop) while the task's lock is free; the run takes the lock at its slot."""
    mark = f"ready{uuid.uuid4().hex}"
    daemon.start()
    at = daemon.iso_in(3.0)
    daemon.write("ready", _task(f'at: "{at}"', mark))
    daemon.wait_for(lambda: _alive_with(mark), 10, "the sandbox started ahead")
    made = daemon.wait_for(lambda: _run_dirs(daemon, "ready"), 5, "the run's directory")
    (run_id,) = made
    run_dir = daemon.home / "workspaces" / "ready" / "runs" / run_id
    assert (run_dir / "log.jsonl").exists() and (run_dir / "artifacts").is_dir()
    lock = daemon.home / "workspaces" / "ready" / ".lock"
    assert not lock.exists() or lock.read_text() == ""  # nobody holds it before the slot
    assert daemon.runs("ready") == []  # and no row before the slot
    row = daemon.wait_for(
        lambda: (r := daemon.runs("ready")) and r[0]["status"] == "succeeded" and r[0],
        15,
        "the run",
    )
    assert row["id"] == run_id
    assert daemon.utc(at) <= daemon.utc(row["queued_at"]) <= daemon.utc(row["started_at"])
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "run.start" and log[-1]["event"] == "run.end"
    assert daemon.stop() == 0


def test_a_fire_made_ready_ahead_whose_lock_another_process_holds_is_skipped(
    daemon: DaemonHome,
) -> None:
    """A run of the task in another process (`daycare task run` without the daemon's
    knowledge) holds the lock across the slot: the fire is recorded skipped, naming
    that process; its sandbox is ended and the directory made ahead removed."""
    from daycare_cli.store.paths import TaskLock

    mark = f"held{uuid.uuid4().hex}"
    daemon.start()
    at = daemon.iso_in(3.0)
    daemon.write("held", _task(f'at: "{at}"', mark))
    lock = TaskLock(daemon.home / "workspaces" / "held" / ".lock")
    lock.acquire()
    try:
        daemon.wait_for(lambda: _alive_with(mark), 10, "the sandbox started ahead")
        row = daemon.wait_for(
            lambda: (r := daemon.runs("held")) and r[0]["finished_at"] and r[0], 15, "the fire"
        )
    finally:
        lock.release()
    assert row["status"] == "skipped"
    assert f"pid {os.getpid()}" in row["skip_reason"]
    daemon.wait_for(lambda: _alive_with(mark) == [], 10, "the sandbox ended")
    daemon.wait_for(lambda: not _run_dirs(daemon, "held"), 5, "its directory removed")
    assert daemon.stop() == 0
