"""Tests for core/streak.py: when a failure streak flags a task and when it recovers."""

from __future__ import annotations

import pytest

from daycare_cli.core.streak import next_streak


@pytest.mark.parametrize(
    ("streak", "flagged", "status", "threshold", "expected"),
    [
        # failures count up and flag once, at the threshold
        (0, False, "failed", 5, (1, False, None)),
        (3, False, "timed_out", 5, (4, False, None)),
        (4, False, "failed", 5, (5, True, "failure-streak")),
        (5, True, "failed", 5, (6, True, None)),
        (9, True, "timed_out", 5, (10, True, None)),
        (0, False, "failed", 1, (1, True, "failure-streak")),
        # a threshold lowered below the current streak flags at the next failure
        (7, False, "failed", 5, (8, True, "failure-streak")),
        # success ends the streak; after a flagged streak it is a recovery
        (3, False, "succeeded", 5, (0, False, None)),
        (6, True, "succeeded", 5, (0, False, "recovery")),
        (6, True, "skipped", 5, (0, False, "recovery")),
        (0, False, "succeeded", 5, (0, False, None)),
        # statuses that say nothing about the task's health leave it alone
        (4, False, "interrupted", 5, (4, False, None)),
        (6, True, "cancelled", 5, (6, True, None)),
        (2, False, "missed", 5, (2, False, None)),
        (2, False, "running", 5, (2, False, None)),
    ],
)
def test_next_streak(
    streak: int,
    flagged: bool,
    status: str,
    threshold: int,
    expected: tuple[int, bool, str | None],
) -> None:
    assert next_streak(streak, flagged, status, threshold) == expected


def test_a_streak_notifies_once_and_recovers_once() -> None:
    streak, flagged, events = 0, False, []
    for status in ["failed"] * 8 + ["succeeded", "succeeded", "failed"]:
        streak, flagged, event = next_streak(streak, flagged, status, 5)
        events.append(event)
    assert events == [None] * 4 + ["failure-streak"] + [None] * 3 + ["recovery", None, None]
    assert (streak, flagged) == (1, False)


@pytest.mark.parametrize(
    ("streak", "status", "threshold", "message"),
    [
        (0, "failed", 0, "threshold must be at least 1"),
        (-1, "failed", 5, "cannot be negative"),
        (0, "exploded", 5, "unknown run status"),
    ],
)
def test_next_streak_rejects_bad_input(
    streak: int, status: str, threshold: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        next_streak(streak, False, status, threshold)
