"""A task as the daemon's plan holds it: its id, its settings, its own values packed.

The plan of 10,000 tasks needs of each only what planning and firing read (triggers,
zone, policies); a run needs the whole task. A `TaskHead` is three references: the id,
one bytes object with the task's own values (name, body, description, env, path, body
line: `Task.packed_own`) and the tuple of its settings, which tasks with equal settings
share (`Task.shared_settings`). It holds ~0.5 KB less than a `Task` with its strings,
and a restart makes it straight from the parse cache (the pickled `Task` is exactly
these three values) without building the task. `unpacked()` gives the whole task back,
the version the plan holds, for a run.
"""

from __future__ import annotations

from typing import Any

from daycare_cli.core.task import AtTrigger, Task, Trigger, rebuild_task


class TaskHead:
    """The planning view of one task: its settings as attributes, the rest packed."""

    __slots__ = ("id", "own", "settings")

    def __init__(self, id: str, own: bytes, settings: tuple[Any, ...]) -> None:
        self.id = id
        self.own = own
        self.settings = settings

    @classmethod
    def of(cls, task: Task) -> TaskHead:
        """The head of a whole task."""
        return cls(task.id, task.packed_own(), task.shared_settings())

    def unpacked(self) -> Task:
        """The whole task (what a run is given)."""
        return rebuild_task(self.id, self.own, self.settings)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled as the whole task is: the parse cache reads either back as either.
        return (rebuild_task, (self.id, self.own, self.settings))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskHead):
            return NotImplemented
        return (self.id, self.own, self.settings) == (other.id, other.own, other.settings)

    __hash__ = None  # type: ignore[assignment]  # as Task: its env is a dict

    def __repr__(self) -> str:
        return f"TaskHead({self.id!r})"

    # The settings planning reads, by their place in TASK_SETTINGS.

    @property
    def timezone(self) -> str | None:
        value: str | None = self.settings[0]
        return value

    @property
    def triggers(self) -> tuple[Trigger, ...]:
        value: tuple[Trigger, ...] = self.settings[1]
        return value

    @property
    def enabled(self) -> bool:
        value: bool = self.settings[2]
        return value

    @property
    def delete_after_run(self) -> bool:
        value: bool = self.settings[3]
        return value

    @property
    def execute(self) -> bool:
        value: bool = self.settings[4]
        return value

    @property
    def run_timeout(self) -> float:
        value: float = self.settings[9]
        return value

    @property
    def overlap(self) -> str:
        value: str = self.settings[10]
        return value

    @property
    def catch_up(self) -> str:
        value: str = self.settings[11]
        return value

    @property
    def catch_up_window(self) -> float | None:
        value: float | None = self.settings[12]
        return value

    @property
    def retries(self) -> int:
        value: int = self.settings[13]
        return value

    @property
    def retry_delay(self) -> float:
        value: float = self.settings[14]
        return value

    @property
    def jitter(self) -> float:
        value: float = self.settings[15]
        return value

    @property
    def once(self) -> bool:
        """True when the task is archived after its first run (as `Task.once`)."""
        return self.delete_after_run or any(isinstance(t, AtTrigger) for t in self.triggers)

    def trigger(self, trigger_id: str) -> Trigger | None:
        """The trigger with that id, if any."""
        for t in self.settings[1]:
            if t.id == trigger_id:
                return t  # type: ignore[no-any-return]
        return None
