"""A temp daycare home for whole runs through `Runner.run`, and readers of a run's files.

The `home` fixture (conftest.py) makes one per test; tests import the type and helpers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daycare_cli.config import load_config
from daycare_cli.core.task import Task
from daycare_cli.core.taskfile import parse_task
from daycare_cli.run.runner import Runner, RunRequest
from daycare_cli.store.paths import Paths
from daycare_cli.store.rows import Event, Run
from daycare_cli.store.state import State


@dataclass
class Home:
    """A temp daycare home with its state database open."""

    paths: Paths
    state: State

    def configure(self, toml: str) -> None:
        """Write config.toml (read again by every `run`)."""
        self.paths.config_file.write_text(toml, "utf-8")

    def task(self, text: str, task_id: str = "t") -> Task:
        """Write a task file into the tasks directory and parse it."""
        path = self.paths.task_file(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        return parse_task(path.read_bytes(), path=str(path))

    def run(self, task: Task, **request: Any) -> Run:
        """One run of `task` through a fresh Runner; the finished row."""
        runner = Runner(self.paths, load_config(self.paths.config_file), self.state)
        run = asyncio.run(runner.run(RunRequest(task=task, **request)))
        assert run is not None
        return run

    def events(self, kind: str) -> list[Event]:
        return [e for e in self.state.list_events(limit=500) if e.kind == kind]


def log_events(run: Run) -> list[dict[str, Any]]:
    """The run's log.jsonl, one dict an event."""
    assert run.run_dir is not None
    lines = (Path(run.run_dir) / "log.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def run_file(run: Run, name: str) -> Path:
    """A file of the run's directory."""
    assert run.run_dir is not None
    return Path(run.run_dir) / name
