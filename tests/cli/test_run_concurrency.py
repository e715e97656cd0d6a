"""Two processes run the same task at once through the CLI (`task run --local`).

The per-task lock decides per `overlap`: `skip` records the second run `skipped` with
the holder's pid, `queue` makes it wait its turn. Either way the state database ends
consistent: one row per run, none left `running` or `queued`.

The second process is started once the first one's block is running (the block drops a
file in the workspace), so the two runs overlap for sure.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

TASK = """\
---
execute: true
model: none
overlap: {overlap}
---
<run_python>
import os, pathlib, time
pathlib.Path(f"started-{{os.environ['DAYCARE_RUN_ID']}}").touch()
time.sleep(2)
print("done")
</run_python>
"""


def start(home: Path, task_id: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DAYCARE_HOME": str(home),
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "daycare_cli", "task", "run", task_id, "--json", "--local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_block(files: Path, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Until a block of the task has started (its marker file exists)."""
    deadline = time.monotonic() + timeout
    while not (files.is_dir() and any(files.glob("started-*"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run's block never started"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    return proc.returncode, json.loads(out)


def db_rows(home: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(home / "state.db")
    try:
        db.row_factory = sqlite3.Row
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT * FROM runs ORDER BY queued_at").fetchall()
    finally:
        db.close()


def run_pair(home: Path, write: Any, overlap: str) -> list[tuple[int, int, dict[str, Any]]]:
    """Run the slow task twice, overlapping; (pid, exit code, run JSON) of each process."""
    write("slow", TASK.format(overlap=overlap))
    procs = [start(home, "slow")]
    try:
        wait_for_block(home / "workspaces" / "slow" / "files", procs[0])
        procs.append(start(home, "slow"))
        results = [(p.pid, *finish(p)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    first = results[0][2]
    assert first["status"] == "succeeded" and first["output"] == "done\n"
    rows = db_rows(home)
    assert len(rows) == 2
    assert {r["id"] for r in rows} == {r[2]["id"] for r in results}
    assert {r["status"] for r in rows} <= {"succeeded", "skipped"}
    assert all(r["finished_at"] for r in rows)
    return results


@pytest.mark.timeout(60)
def test_overlap_skip_records_the_second_run_skipped_naming_the_holder(
    home: Path, write: Any
) -> None:
    (pid1, code1, run1), (_, code2, run2) = run_pair(home, write, "skip")
    assert (code1, code2) == (0, 0)
    assert run2["status"] == "skipped"
    assert run2["skip_reason"] == (
        f"another run of this task is active (pid {pid1}); overlap: skip"
    )
    assert run2["started_at"] is None and run2["output"] is None
    # The skipped run never ran a block.
    files = home / "workspaces" / "slow" / "files"
    assert [p.name for p in files.glob("started-*")] == [f"started-{run1['id']}"]


@pytest.mark.timeout(60)
def test_overlap_queue_runs_both_one_after_the_other(home: Path, write: Any) -> None:
    (_, code1, run1), (_, code2, run2) = run_pair(home, write, "queue")
    assert (code1, code2) == (0, 0)
    assert (run1["status"], run2["status"]) == ("succeeded", "succeeded")
    assert run2["output"] == "done\n"
    # The second was queued while the first ran, and started after it finished.
    first_end = datetime.fromisoformat(run1["finished_at"])
    assert datetime.fromisoformat(run2["queued_at"]) < first_end
    assert datetime.fromisoformat(run2["started_at"]) >= first_end
