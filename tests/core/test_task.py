"""Tests for core/task.py: the effective zone of a trigger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daycare_cli.core.task import (
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    Task,
    Trigger,
    WebhookTrigger,
    effective_zone,
)

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("task_zone", "trigger", "expected"),
    [
        (None, None, "Etc/Default"),
        ("Europe/Berlin", None, "Europe/Berlin"),
        (None, CronTrigger("0 9 * * *"), "Etc/Default"),
        ("Europe/Berlin", CronTrigger("0 9 * * *"), "Europe/Berlin"),
        ("Europe/Berlin", CronTrigger("0 9 * * *", timezone="Asia/Tokyo"), "Asia/Tokyo"),
        (None, CronTrigger("0 9 * * *", timezone="Asia/Tokyo"), "Asia/Tokyo"),
        ("Europe/Berlin", AtTrigger(NOON, timezone="UTC"), "UTC"),
        ("Europe/Berlin", AtTrigger(NOON), "Europe/Berlin"),
        (None, AtTrigger(NOON), "Etc/Default"),
        # every and webhook triggers have no zone of their own
        ("Europe/Berlin", EveryTrigger(60.0), "Europe/Berlin"),
        (None, WebhookTrigger(), "Etc/Default"),
        # an empty zone is no zone
        ("", CronTrigger("0 9 * * *", timezone=""), "Etc/Default"),
    ],
)
def test_effective_zone(task_zone: str | None, trigger: Trigger | None, expected: str) -> None:
    task = Task(id="t", name="t", timezone=task_zone)
    assert effective_zone(task, trigger, "Etc/Default") == expected
