"""One copy of the parts many tasks have in common (a daemon with 10,000 tasks).

Most tasks share their triggers' zones and cron expressions, their policies, their
sandbox and their defaults; a parse makes a new object for each of them in each task.
`SharedParts.task` gives back an equal task whose immutable parts are one object per
distinct value, so a parse cache pickled from such tasks loads them shared as well.
Only low-variety parts are shared (never names, bodies or paths), so the pool stays small.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from daycare_cli.core.task import AtTrigger, Task

T = TypeVar("T")


class SharedParts:
    """A pool of immutable values, keyed by type and value (so `1` never stands for `1.0`)."""

    def __init__(self) -> None:
        self.pool: dict[tuple[type, Any], Any] = {}

    def one(self, value: T) -> T:
        """The pooled object equal to `value` (and of its type); `value` when it is new."""
        shared: T = self.pool.setdefault((type(value), value), value)
        return shared

    def task(self, task: Task) -> Task:
        """An equal task whose low-variety immutable parts are the pooled ones."""
        # `at` triggers are left alone: equal instants in other zones compare equal, but
        # their zone shows in the DST note. A sandbox with line positions (not compared)
        # keeps its own.
        triggers = tuple(t if isinstance(t, AtTrigger) else self.one(t) for t in task.triggers)
        if not any(isinstance(t, AtTrigger) for t in triggers):
            triggers = self.one(triggers)
        sandbox = task.sandbox
        if not (sandbox.read_at or sandbox.write_at):
            sandbox = self.one(sandbox)
        return dataclasses.replace(
            task,
            triggers=triggers,
            sandbox=sandbox,
            python=self.one(task.python),
            timezone=self.one(task.timezone),
            model=self.one(task.model),
            overlap=self.one(task.overlap),
            catch_up=self.one(task.catch_up),
            catch_up_window=self.one(task.catch_up_window),
            timeout=self.one(task.timeout),
            run_timeout=self.one(task.run_timeout),
            retry_delay=self.one(task.retry_delay),
            jitter=self.one(task.jitter),
            notify=self.one(task.notify),
            notify_on=self.one(task.notify_on),
            tags=self.one(task.tags),
        )
