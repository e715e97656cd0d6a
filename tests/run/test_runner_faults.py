"""A run whose bookkeeping fails inside daycare still ends, with a status and the error
(docs/operations.md: runs never stay `running` after their process ended)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from runhome import Home

from daycare_cli.config import load_config
from daycare_cli.run.runner import Runner, RunRequest

TASK = "---\nexecute: false\nmodel: none\n---\nHi.\n"


def test_a_run_whose_workspace_cannot_be_made_fails_with_the_reason(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    task = home.task(TASK)
    workspace = home.paths.workspace(task.id)
    workspace.mkdir(parents=True)
    (workspace / "files").write_text("not a directory")  # mkdir files/ fails
    with caplog.at_level(logging.ERROR, logger="daycare.runner"):
        run = home.run(task)
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("internal error: FileExistsError")
    assert run.finished_at is not None
    assert [r.status for r in home.state.running_runs(include_queued=True)] == []
    # One line for the person reading the log, no traceback for an expected fault.
    [record] = [r for r in caplog.records if r.name == "daycare.runner"]
    assert "File exists" in record.getMessage() and record.exc_info is None


def test_a_run_whose_task_lock_cannot_be_opened_fails_instead_of_staying_queued(
    home: Home,
) -> None:
    task = home.task(TASK.replace("model: none\n", "model: none\noverlap: skip\n"))
    (home.paths.workspace(task.id) / ".lock").mkdir(parents=True)  # open(O_RDWR) fails
    runner = Runner(home.paths, load_config(home.paths.config_file), home.state)
    run = asyncio.run(runner.run(RunRequest(task=task)))
    assert run is not None
    assert (run.status, run.started_at) == ("failed", None)
    assert run.error is not None and "IsADirectoryError" in run.error
    finished = [e for e in home.events("run.finished") if e.run == run.id]
    assert finished and finished[0].detail is not None
    assert finished[0].detail["status"] == "failed"
