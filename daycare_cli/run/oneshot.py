"""One task file, run once, with no daemon, no daycare home and no prior state.

This is what `daycare task run --file TASK.md` does, and what the Kubernetes CronJobs and
systemd services of `daycare export` start. The run goes through the same `Runner` as
every other run, against a throwaway home in a temporary directory: its events are
handed to `on_event` as they happen (the CLI prints them as JSON lines: the engine's
log is the run log), its artifacts are copied to `<artifacts>/<task-id>/<run-id>/`, and
the home is removed afterwards. `files/` and `memory.md` therefore start empty each run.

Isolation: inside a container bubblewrap usually lacks the privileges it needs. The
one-shot mode opts in to reduced isolation explicitly (config `sandbox.isolation =
"reduced"`), so blocks still run there, relying on the container's (or the service's)
own isolation; its first event says so, and the run records which isolation applied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daycare_cli.config import Config
from daycare_cli.core.errors import NotFoundError, TaskFileError
from daycare_cli.core.task import Task

EventSink = Callable[[dict[str, Any]], None]

# Exit codes of the one-shot mode by run status: an engine retries and alerts on non-zero.
EXIT_CODES: dict[str, int] = {
    "succeeded": 0,
    "skipped": 0,
    "failed": 1,
    "timed_out": 1,
    "cancelled": 1,
    "interrupted": 1,
}

ISOLATION_NOTE = (
    "one-shot mode: blocks run under bubblewrap when it can start here; otherwise with "
    'reduced isolation (sandbox.isolation = "reduced", allowed explicitly by this mode), '
    "relying on the container's or service's own isolation"
)


@dataclass
class OneShotResult:
    """The finished run (its JSON shape) and where its artifacts were copied."""

    run: dict[str, Any]
    artifacts: Path | None

    @property
    def exit_code(self) -> int:
        """0 for succeeded or skipped, 1 for every other end (see EXIT_CODES)."""
        return EXIT_CODES.get(str(self.run.get("status")), 1)


def read_task_file(path: Path) -> Task:
    """Parse a task file named on the command line; the file name is its id."""
    from daycare_cli.core.taskfile import parse_task

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"no task file {path}", hint="give the path of a task file, e.g. --file tasks/x.md"
        ) from None
    except OSError as exc:
        raise TaskFileError(f"cannot read the file: {exc.strerror}", path=str(path)) from None
    return parse_task(data, path=str(path), task_id=path.name.removesuffix(".md"))


def oneshot_config(base: Config) -> Config:
    """`base` (the user's config, or an empty one) with reduced isolation allowed."""
    raw = dict(base.raw)
    sandbox = raw.get("sandbox")
    raw["sandbox"] = {**(sandbox if isinstance(sandbox, dict) else {}), "isolation": "reduced"}
    return Config(base.path, raw)


async def run_file(
    path: Path,
    *,
    artifacts: Path | None,
    config: Config,
    on_event: EventSink,
    payload: bytes | None = None,
) -> OneShotResult:
    """Run the task in `path` once in a throwaway home; events go to `on_event`.

    Raises NotFoundError or TaskFileError (before anything runs) for a missing or invalid
    file.
    """
    from daycare_cli.run.runner import Runner, RunRequest
    from daycare_cli.store.paths import Paths
    from daycare_cli.store.state import State

    task = read_task_file(path)
    config = oneshot_config(config)
    on_event(
        {
            "event": "oneshot.start",
            "task": task.id,
            "file": str(path),
            "isolation_allowed": "reduced",
            "note": ISOLATION_NOTE,
        }
    )
    with tempfile.TemporaryDirectory(prefix="daycare-oneshot-") as tmp:
        home = Path(tmp)
        # The config's directory is hidden from blocks: keep it apart from the workspaces.
        paths = Paths(home, path.parent, home / "config" / "config.toml", home / "run")
        if os.environ.get("DAYCARE_CACHE_DIR"):  # Python environments built ahead (issue 9)
            paths = replace(paths, cache=Path(os.environ["DAYCARE_CACHE_DIR"]))
        state = State.open(paths.state_db)
        try:
            runner = Runner(paths, config, state, actor="cli", on_event=on_event)
            run = await runner.run(RunRequest(task=task, trigger="schedule", payload=payload))
        finally:
            state.close()
        assert run is not None  # a fresh database has no slot taken
        result = run.to_json()
        copied = None
        if artifacts is not None:
            copied = artifacts / task.id / run.id
            source = paths.workspace(task.id) / "runs" / run.id / "artifacts"
            copied.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, copied, dirs_exist_ok=True, symlinks=True)
    result["run_dir"] = None  # the throwaway home is gone
    return OneShotResult(result, copied)
