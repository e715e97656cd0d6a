"""What the daemon remembers between starts: trigger state and task state.

`trigger_state` holds a trigger's last slot and fire and its failure streak;
`task_state` a task's failure streak and its last success and failure. Functions over a
connection: a write runs inside the caller's transaction (see `State._write`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime

from daycare_cli.core.streak import FAILURE_STATUSES, StreakChange, next_streak
from daycare_cli.store.rows import TaskState, TriggerState, slot_text, stamp

# --- writes (inside the caller's transaction) ----------------------------------------------


def remember_slot(db: sqlite3.Connection, task: str, trigger_id: str, slot: str) -> None:
    """Move a trigger's `last_slot` on to `slot` (a stored slot text), never back.

    Stored slots have one fixed-width spelling, so text order is time order.
    """
    db.execute(
        "INSERT INTO trigger_state (task, trigger_id, last_slot) VALUES (?, ?, ?) "
        "ON CONFLICT (task, trigger_id) DO UPDATE SET "
        "last_slot = max(coalesce(last_slot, ''), excluded.last_slot)",
        (task, trigger_id, slot),
    )


def plan_from(db: sqlite3.Connection, rows: Iterable[tuple[str, str, datetime]]) -> None:
    """Record the instant each new trigger was first planned from; existing states stay."""
    db.executemany(
        "INSERT INTO trigger_state (task, trigger_id, last_slot) VALUES (?, ?, ?) "
        "ON CONFLICT (task, trigger_id) DO NOTHING",
        # Row by row: a start's 11,000 new triggers never make a list of rows and
        # strings at once (~1.2 MB that the daemon's heap would keep, fragmented).
        ((task, trigger_id, slot_text(at)) for task, trigger_id, at in rows),
    )


def set_trigger_state(
    db: sqlite3.Connection,
    task: str,
    trigger_id: str,
    *,
    last_slot: datetime | str | None,
    last_fire_at: datetime | None,
    failure_streak: int | None,
    flagged: bool | None,
) -> TriggerState:
    """Update a trigger's state; arguments left None keep their value. Returns the state."""
    db.execute(
        "INSERT INTO trigger_state (task, trigger_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (task, trigger_id),
    )
    db.execute(
        """UPDATE trigger_state SET last_slot = COALESCE(?, last_slot),
               last_fire_at = COALESCE(?, last_fire_at),
               failure_streak = COALESCE(?, failure_streak),
               flagged = COALESCE(?, flagged)
           WHERE task = ? AND trigger_id = ?""",
        (
            slot_text(last_slot),
            None if last_fire_at is None else stamp(last_fire_at),
            failure_streak,
            None if flagged is None else int(flagged),
            task,
            trigger_id,
        ),
    )
    row = db.execute(
        "SELECT * FROM trigger_state WHERE task = ? AND trigger_id = ?", (task, trigger_id)
    ).fetchone()
    return TriggerState.from_row(row)


def record_outcome(
    db: sqlite3.Connection, task: str, status: str, run_id: str, threshold: int
) -> StreakChange:
    """Move the task's failure streak (and its run's trigger's) by a finished run's status."""
    db.execute("INSERT INTO task_state (task) VALUES (?) ON CONFLICT DO NOTHING", (task,))
    row = db.execute(
        "SELECT failure_streak, flagged FROM task_state WHERE task = ?", (task,)
    ).fetchone()
    streak, flagged, event = next_streak(
        row["failure_streak"], bool(row["flagged"]), status, threshold
    )
    db.execute(
        """UPDATE task_state SET failure_streak = ?, flagged = ?,
               last_success_run = CASE WHEN ? THEN ? ELSE last_success_run END,
               last_failure_run = CASE WHEN ? THEN ? ELSE last_failure_run END
           WHERE task = ?""",
        (
            streak,
            int(flagged),
            status == "succeeded",
            run_id,
            status in FAILURE_STATUSES,
            run_id,
            task,
        ),
    )
    trig = db.execute("SELECT trigger_id FROM runs WHERE id = ?", (run_id,)).fetchone()
    if trig is not None and trig["trigger_id"] is not None:
        _record_trigger_outcome(db, task, trig["trigger_id"], status, threshold)
    return StreakChange(streak, flagged, event)


def _record_trigger_outcome(
    db: sqlite3.Connection, task: str, trigger_id: str, status: str, threshold: int
) -> None:
    db.execute(
        "INSERT INTO trigger_state (task, trigger_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (task, trigger_id),
    )
    row = db.execute(
        "SELECT failure_streak, flagged FROM trigger_state WHERE task = ? AND trigger_id = ?",
        (task, trigger_id),
    ).fetchone()
    streak, flagged, _ = next_streak(row["failure_streak"], bool(row["flagged"]), status, threshold)
    db.execute(
        "UPDATE trigger_state SET failure_streak = ?, flagged = ? "
        "WHERE task = ? AND trigger_id = ?",
        (streak, int(flagged), task, trigger_id),
    )


# --- reads --------------------------------------------------------------------------------


def get_trigger_state(db: sqlite3.Connection, task: str, trigger_id: str) -> TriggerState:
    """What is remembered about a trigger; a fresh state if nothing is."""
    row = db.execute(
        "SELECT * FROM trigger_state WHERE task = ? AND trigger_id = ?", (task, trigger_id)
    ).fetchone()
    return TriggerState.from_row(row) if row is not None else TriggerState(task, trigger_id)


def trigger_states(db: sqlite3.Connection, task: str | None) -> list[TriggerState]:
    """Every remembered trigger state (of one task)."""
    if task is None:
        cur = db.execute("SELECT * FROM trigger_state ORDER BY task, trigger_id")
    else:
        cur = db.execute("SELECT * FROM trigger_state WHERE task = ? ORDER BY trigger_id", (task,))
    return [TriggerState.from_row(row) for row in cur.fetchall()]


def last_slots(db: sqlite3.Connection) -> dict[str, str]:
    """Every trigger's stored last slot as stored (text), by `slot_key(task, trigger id)`:
    what a daemon's start reads, lean (10,000 full states held ~5 MB more at its peak,
    a (task, trigger) tuple key 1.2 MB more)."""
    cur = db.execute(
        "SELECT task || char(0) || trigger_id, last_slot FROM trigger_state"
        " WHERE last_slot IS NOT NULL AND last_slot != ''"
    )
    cur.row_factory = None  # plain tuples
    return dict(cur)


def slot_key(task: str, trigger_id: str) -> str:
    """The key of a trigger in `last_slots`."""
    return f"{task}\0{trigger_id}"


def get_task_state(db: sqlite3.Connection, task: str) -> TaskState:
    """A task's failure streak and last success and failure; a fresh state if none."""
    row = db.execute("SELECT * FROM task_state WHERE task = ?", (task,)).fetchone()
    return TaskState.from_row(row) if row is not None else TaskState(task)


def flagged_tasks(db: sqlite3.Connection) -> list[str]:
    """Tasks whose failure streak reached the threshold and has not recovered yet."""
    return [str(r["task"]) for r in db.execute("SELECT task FROM task_state WHERE flagged = 1")]
