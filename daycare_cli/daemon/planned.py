"""What the plan holds (`plan.py`): a task as scheduled, with its runs, and one planned
fire of a trigger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.taskhead import TaskHead
from daycare_cli.run.runner import RunRequest
from daycare_cli.store.rows import Run


@dataclass(order=True, slots=True)
class Fire:
    """One planned fire of a trigger: when to start and which slot it is for."""

    at: float
    seq: int
    task_id: str = field(compare=False)
    trigger_id: str = field(compare=False)
    slot: datetime = field(compare=False)
    kind: str = field(compare=False, default="schedule")  # schedule | catch-up | retry
    attempt: int = field(compare=False, default=1)
    generation: int = field(compare=False, default=0)
    # A catch-up run's row is written (queued) when the catch-up is decided: its id, and
    # the pending commit of its row (None once it is known to be committed).
    run_id: str | None = field(compare=False, default=None)
    row: asyncio.Future[Run | None] | None = field(compare=False, default=None)


class PlanningFailed(Exception):
    """Planning raised for some tasks of a load; every other task was loaded."""

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{task}: {type(e).__name__}: {e}" for task, e in failures))


# What a task that never ran holds as its runs: one shared, read-only empty of each (two
# containers a task, 10,000 tasks: 1.2 MB), made its own at its first run or edit.
NO_RUNS: Mapping[str, asyncio.Task[Any]] = MappingProxyType({})
NO_QUEUE: Sequence[RunRequest] = ()


class NextFires(MutableMapping[str, datetime]):
    """Each trigger's next slot, by trigger id: a dict as far as its users can tell, in
    64 bytes for a task of one trigger (a dict of one is 192: 1.3 MB for 10,000 tasks).

    The first trigger's slot is held inline; the others (a task with several triggers)
    in a dict of their own. Iteration follows insertion order, as a dict's does.
    """

    __slots__ = ("_id", "_more", "_slot")

    def __init__(self) -> None:
        self._id: str | None = None
        self._slot: datetime | None = None
        self._more: dict[str, datetime] | None = None

    def __getitem__(self, key: str) -> datetime:
        if key == self._id and self._slot is not None:
            return self._slot
        if self._more is not None:
            return self._more[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: datetime) -> None:
        if self._id is None or key == self._id:
            self._id, self._slot = key, value
        else:
            if self._more is None:
                self._more = {}
            self._more[key] = value

    def __delitem__(self, key: str) -> None:
        if key == self._id:
            if self._more:  # the oldest of the others moves in: the order stays a dict's
                self._id = next(iter(self._more))
                self._slot = self._more.pop(self._id)
            else:
                self._id = self._slot = None
            if not self._more:
                self._more = None
        elif self._more is not None:
            del self._more[key]
            if not self._more:
                self._more = None
        else:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        if self._id is not None:
            yield self._id
        if self._more is not None:
            yield from self._more

    def __len__(self) -> int:
        return (self._id is not None) + (len(self._more) if self._more is not None else 0)

    def pairs(self) -> tuple[tuple[str, datetime], ...]:
        """(trigger id, slot) of each, in order: what `GET /tasks` reads of 10,000 tasks,
        without the mapping views' lookups (4 ms a listing)."""
        first = () if self._id is None or self._slot is None else ((self._id, self._slot),)
        return first if self._more is None else first + tuple(self._more.items())

    def clear(self) -> None:
        """Forget every trigger's slot."""
        self._id = self._slot = self._more = None

    def __repr__(self) -> str:
        return f"NextFires({dict(self)!r})"


@dataclass(slots=True)
class Scheduled:
    """A task as the daemon holds it: the last good version and what is running.

    `task` is its head (`core/taskhead.py`): its settings, to plan and fire it, and its
    own values (name, body, env, ...) packed in one bytes object; a run is given
    `task.unpacked()`, the version the plan holds even if the file changed since.
    `active` and `queued` are read-only until `own_runs()` (a run starts or is queued, or
    a new version takes them over): from then on they are this task's, shared with the
    versions that follow it, so a run of an older version still counts for overlap.
    """

    task: TaskHead
    digest: str
    generation: int
    error: TaskFileError | None = None  # an invalid edit; the old version stays scheduled
    active: Mapping[str, asyncio.Task[Any]] = field(default_factory=lambda: NO_RUNS)
    queued: Sequence[RunRequest] = NO_QUEUE
    next_fire: NextFires = field(default_factory=NextFires)

    def own_runs(self) -> tuple[dict[str, asyncio.Task[Any]], list[RunRequest]]:
        """Its active runs and its queue as containers of its own, to change."""
        if not isinstance(self.active, dict):
            self.active = {}
        if not isinstance(self.queued, list):
            self.queued = []
        return self.active, self.queued
