"""The failure streak of a task: when to flag it and when it has recovered (docs/task-file.md,
"notify and notify_on").

A run's status moves the streak: a failure adds one, a success ends it, and statuses
that say nothing about the task's health (interrupted by a dying daemon, cancelled, a
missed slot) leave it alone. Crossing the threshold flags the task once
(`failure-streak`); the first success after that unflags it once (`recovery`). The
store keeps the numbers; this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StreakEvent = Literal["failure-streak", "recovery"]

DEFAULT_THRESHOLD = 5

# The task itself failed: its code raised, it ran out of time, or the model failed.
FAILURE_STATUSES = frozenset({"failed", "timed_out"})
# The task did its job; a skip means "nothing to report", which is healthy.
SUCCESS_STATUSES = frozenset({"succeeded", "skipped"})
# Not the task's fault or not finished: the streak stays as it is.
NEUTRAL_STATUSES = frozenset({"queued", "running", "interrupted", "cancelled", "missed"})


@dataclass(frozen=True)
class StreakChange:
    """The streak after one outcome: its length, whether the task is flagged, and the event.

    `event` is `failure-streak` when this outcome crossed the threshold, `recovery` when
    it ended a flagged streak, else None.
    """

    streak: int
    flagged: bool
    event: StreakEvent | None = None


def next_streak(
    streak: int, flagged: bool, status: str, threshold: int = DEFAULT_THRESHOLD
) -> tuple[int, bool, StreakEvent | None]:
    """The new (streak, flagged, event) after a run ended with `status`.

    A failure flags the task when the streak reaches `threshold` and it is not flagged
    yet, so a streak notifies once however long it gets; a lowered threshold takes effect
    at the next failure. A success resets the streak and, if flagged, is a recovery.
    """
    if threshold < 1:
        raise ValueError(f"failure streak threshold must be at least 1, got {threshold}")
    if streak < 0:
        raise ValueError(f"failure streak cannot be negative, got {streak}")
    if status in FAILURE_STATUSES:
        streak += 1
        if not flagged and streak >= threshold:
            return streak, True, "failure-streak"
        return streak, flagged, None
    if status in SUCCESS_STATUSES:
        return 0, False, "recovery" if flagged else None
    if status in NEUTRAL_STATUSES:
        return streak, flagged, None
    raise ValueError(f"unknown run status {status!r}")
