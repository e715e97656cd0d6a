"""Where each trigger's next fires count from, as the CLI reads it (docs/task-file.md, "schedule").

`core.schedule.upcoming()` gives the next fires of a trigger from its stored state: the
`last_slot` of `trigger_state` (the last slot fired, else the instant the trigger was
first planned). The daemon records that instant when it first plans a trigger; the CLI
records it too, the same way, for an `every` trigger nobody planned yet, so the next
fire it shows stays put from one invocation to the next, and a daemon started later
fires when the CLI said it would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from daycare_cli.core.task import EveryTrigger, Task
from daycare_cli.store.database import StateError
from daycare_cli.store.state import State


def trigger_anchors(
    db_path: Path, tasks: Iterable[Task], now: datetime
) -> dict[tuple[str, str], datetime]:
    """The stored `last_slot` of each (task id, trigger id) of the `every` triggers of
    enabled `tasks`; one with none is first recorded as planned from `now`.

    The first writer wins (the daemon or another CLI may have recorded one since), and
    what is stored is returned. Cron and `at` fires depend on now alone (an `at` slot is
    recorded only once it has passed), so without an `every` trigger nothing is opened.
    Raises StateError when the database cannot be read or written.
    """
    every = [
        (task.id, trigger.id)
        for task in tasks
        if task.enabled
        for trigger in task.triggers
        if isinstance(trigger, EveryTrigger)
    ]
    if not every:
        return {}
    wanted = set(every)
    ids = {task_id for task_id, _ in every}
    try:
        with State.open(db_path) as state:
            stored = state.trigger_states(next(iter(ids)) if len(ids) == 1 else None)
            slots = {
                (s.task, s.trigger_id): s.last_slot
                for s in stored
                if (s.task, s.trigger_id) in wanted and s.last_slot is not None
            }
            missing = [key for key in every if key not in slots]
            if missing:
                state.plan_from([(task, trigger, now) for task, trigger in missing])
                for task, trigger in missing:  # read back: another writer may have won
                    last = state.get_trigger_state(task, trigger).last_slot
                    if last is not None:
                        slots[task, trigger] = last
    except sqlite3.Error as exc:
        raise StateError(
            f"cannot read or record trigger state: {exc}",
            path=str(db_path),
            hint="check that the daycare home is writable and its disk not full",
        ) from None
    return slots
