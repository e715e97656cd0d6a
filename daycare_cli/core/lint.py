"""Warnings about valid task files: allowed, but probably not what the author meant.

`lint_warnings` looks at the task alone; `task_warnings` adds what depends on the time
and the default zone (a passed `at`, a too-frequent trigger). Both are pure: the caller
passes `now` and the default zone (config `timezone`, else the system's).
"""

from __future__ import annotations

from datetime import datetime

from daycare_cli.core.errors import UserError
from daycare_cli.core.prompt import find_blocks
from daycare_cli.core.schedule import at_instant, frequency_warning
from daycare_cli.core.task import AtTrigger, SandboxSpec, Task, effective_zone


def lint_warnings(task: Task) -> list[str]:
    """Things that are allowed but probably not what the author meant."""
    warnings: list[str] = []
    blocks = find_blocks(task.body)
    if blocks and not task.execute:
        warnings.append(
            f"the body has {len(blocks)} <run_python> block(s) but `execute` is false: "
            "they are sent as text; set `execute: true` to run them"
        )
    if task.execute and not blocks:
        warnings.append("`execute` is true but the body has no <run_python> blocks")
    if not task.execute and (task.sandbox != SandboxSpec() or task.env):
        warnings.append("`sandbox` and `env` have no effect without `execute: true`")
    if not task.execute and not task.python.empty:
        warnings.append("`python` has no effect without `execute: true`")
    for trigger in task.triggers:
        if (
            isinstance(trigger, AtTrigger)
            and trigger.timezone is None
            and task.timezone is None
            and trigger.at.tzinfo is None
        ):
            warnings.append(
                f"trigger {trigger.id}: {trigger.at:%Y-%m-%d %H:%M} is read in the default zone "
                "(config `timezone`, else the system's); add `timezone:` to pin it"
            )
    if not task.body.strip():
        warnings.append("the prompt body is empty: a run has nothing to say")
    return warnings


def task_warnings(task: Task, *, now: datetime, default_zone: str) -> list[str]:
    """Lint warnings and frequency warnings of a valid task, as of `now`.

    `default_zone` is the zone of triggers and tasks that name none.
    """
    warnings = list(lint_warnings(task))
    for trigger in task.triggers:
        zone = effective_zone(task, trigger, default_zone)
        if isinstance(trigger, AtTrigger) and at_instant(trigger, zone) <= now:
            warnings.append(f"trigger {trigger.id}: its time has passed; it will not fire")
        try:
            message = frequency_warning(trigger, tz=zone, now=now)
        except UserError:
            message = None
        if message:
            warnings.append(f"trigger {trigger.id}: {message}")
    return warnings
