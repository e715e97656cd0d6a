"""The state one CLI invocation shares: global options, resolved lazily.

Nothing is read from disk until a command asks for it, so `daycare --help` and
`daycare cron explain` never touch the tasks directory or the config file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    from daycare_cli.config import Config
    from daycare_cli.core.task import Task, Trigger
    from daycare_cli.store.paths import Paths
    from daycare_cli.store.tasks import TaskStore


NOW_ENV = "DAYCARE_NOW"


def invocation_now() -> datetime:
    """The CLI's clock, read once per invocation: the current time, or `$DAYCARE_NOW`.

    `DAYCARE_NOW` (ISO 8601 with an offset) is for tests: it lets two invocations be
    "a minute apart" without waiting a minute. It moves only this "now": the next fires
    and relative times the CLI shows, and the instant it records as an `every` trigger's
    anchor when none is stored. Runs, their records and the daemon keep the real clock.
    """
    value = os.environ.get(NOW_ENV)
    if not value:
        return datetime.now(UTC)
    from daycare_cli.core.errors import UsageError

    try:
        now: datetime | None = datetime.fromisoformat(value)
    except ValueError:
        now = None
    if now is None or now.tzinfo is None:
        raise UsageError(
            f"must be an ISO 8601 time with an offset, not {value!r}",
            path=NOW_ENV,
            hint=f"e.g. {NOW_ENV}=2026-03-29T01:59:00+01:00, or unset it (it is for tests)",
        )
    return now.astimezone(UTC)


@dataclass
class CliContext:
    """Global options of one invocation and what they resolve to."""

    home: Path | None = None
    tasks_dir: Path | None = None
    config_file: Path | None = None
    started: datetime = field(default_factory=invocation_now)

    def check_home(self) -> None:
        """Refuse a `--home` that does not exist: a typo must not read as an empty home.

        ($DAYCARE_HOME may name a new home: it is created on first write, as in the tour.)
        """
        if self.home is None or self.__dict__.get("_home_checked"):
            return
        if not self.home.expanduser().is_dir():
            from daycare_cli.core.errors import NotFoundError

            raise NotFoundError(
                f"--home {self.home} does not exist",
                hint=f"check the path, or create it to start a new home: mkdir -p {self.home}",
            )
        self.__dict__["_home_checked"] = True

    @cached_property
    def config(self) -> Config:
        """config.toml (an empty config when the file does not exist)."""
        from daycare_cli.config import load_config
        from daycare_cli.store.paths import Paths

        self.check_home()

        # The config file's location does not depend on tasks_dir, so a first resolve finds it.
        first = Paths.resolve(self.home, self.tasks_dir, self.config_file)
        return load_config(first.config_file)

    @cached_property
    def paths(self) -> Paths:
        """Where things live, honouring flags, environment and `tasks_dir` in config."""
        from daycare_cli.store.paths import Paths

        self.check_home()
        configured = self.config.get("tasks_dir")
        sock = self.config.get("socket")
        return Paths.resolve(
            self.home,
            self.tasks_dir,
            self.config_file,
            configured_tasks_dir=str(configured) if configured else None,
            configured_socket=str(sock) if sock else None,
        )

    @cached_property
    def store(self) -> TaskStore:
        """The task files of the resolved tasks directory."""
        from daycare_cli.store.tasks import TaskStore

        return TaskStore(self.paths)

    @property
    def now(self) -> datetime:
        """The instant this invocation started (UTC); one "now" for a whole listing."""
        return self.started

    @cached_property
    def default_zone(self) -> str:
        """The zone of tasks that name none: config, else the system's."""
        return self.config.timezone

    def audit(self, kind: str, task_id: str, **detail: object) -> None:
        """Record a change made through the CLI in the audit ledger (actor `cli`)."""
        from daycare_cli.store.state import State

        with State.open(self.paths.state_db) as state:
            state.add_event("cli", kind, task=task_id, detail=dict(detail) or None)

    def task_zone(self, task: Task) -> str:
        """The zone a task's cron and `at` triggers use when they name none."""
        from daycare_cli.core.task import effective_zone

        return effective_zone(task, None, self.default_zone)

    def trigger_zone(self, task: Task, trigger: Trigger) -> str:
        """The zone one trigger is evaluated in."""
        from daycare_cli.core.task import effective_zone

        return effective_zone(task, trigger, self.default_zone)


def get_context(ctx: typer.Context) -> CliContext:
    """The CliContext of the running command (made by the root callback)."""
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, CliContext):
        obj = CliContext()
        root.obj = obj
    return obj
