"""Tests for core/lint.py: warnings about valid task files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daycare_cli.core.lint import lint_warnings, task_warnings
from daycare_cli.core.task import Task
from daycare_cli.core.taskfile import parse_task


def parse(text: str | bytes, path: str = "tasks/demo.md") -> Task:
    return parse_task(text, path=path)


# ----------------------------------------------------------------------------- lint_warnings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nexecute: true\n---\n<run_python>print(1)</run_python>\n", []),
        ("---\n---\n<run_python>print(1)</run_python>\n", ["`execute` is false"]),
        ("---\nexecute: true\n---\nno code\n", ["no <run_python> blocks"]),
        ("---\nsandbox: {network: true}\n---\ntext\n", ["no effect without `execute: true`"]),
        ("---\nenv: {A: b}\n---\ntext\n", ["no effect without `execute: true`"]),
        ("---\npython: {dependencies: [httpx]}\n---\ntext\n", ["`python` has no effect"]),
        ("---\nname: Quiet\n---\n\n", ["body is empty"]),
        ("---\n---\nJust text.\n", []),
        ("---\ntriggers: [{at: '2026-11-24T12:00'}]\n---\nx\n", ["read in the default zone"]),
        ("---\ntimezone: UTC\ntriggers: [{at: '2026-11-24T12:00'}]\n---\nx\n", []),
        ("---\ntriggers: [{at: '2026-11-24T12:00+01:00'}]\n---\nx\n", []),
    ],
)
def test_lint_warnings(text: str, expected: list[str]) -> None:
    warnings = lint_warnings(parse(text))
    assert len(warnings) == len(expected)
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


# ----------------------------------------------------------------------------- task_warnings

NOON_UTC = datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
NAIVE_AT = "---\ntriggers: [{at: '2026-01-01T12:00'}]\n---\nx\n"


@pytest.mark.parametrize(
    ("text", "default_zone", "expected"),
    [
        # A naive `at` is read in the default zone passed in: 12:00 Berlin is 11:00 UTC.
        (NAIVE_AT, "UTC", ["read in the default zone"]),
        (NAIVE_AT, "Europe/Berlin", ["read in the default zone", "at: its time has passed"]),
        # The task's zone wins over the default.
        ("---\ntimezone: UTC\ntriggers: [{at: '2026-01-01T12:00'}]\n---\nx\n", "Asia/Tokyo", []),
        # The trigger's own zone wins over the task's: 12:00 in Berlin has passed at 11:30 UTC.
        (
            "---\ntimezone: UTC\ntriggers: [{at: '2026-01-01T12:00', timezone: Europe/Berlin}]"
            "\n---\nx\n",
            "UTC",
            ["at: its time has passed"],
        ),
        ("---\ntriggers: [{at: '2026-01-01T11:30Z'}]\n---\nx\n", "UTC", ["its time has passed"]),
        ("---\ntriggers: [{at: '2026-01-01T11:31Z'}]\n---\nx\n", "UTC", []),
        ('---\nschedule: "*/2 * * * *"\n---\nx\n', "UTC", ["cron: This schedule fires"]),
        ('---\nschedule: "*/5 * * * *"\n---\nx\n', "UTC", []),
        ("---\ntriggers: [{every: 90s}]\n---\nx\n", "UTC", ["every: This trigger fires every"]),
        ("---\ntriggers: [{every: 5m}]\n---\nx\n", "UTC", []),
        ("---\ntriggers: [{webhook: true}]\n---\nx\n", "UTC", []),
        # Lint warnings come first, then one line a trigger, in trigger order.
        (
            '---\nschedule: "* * * * *"\ntriggers: [{every: 10s}]\n---\n',
            "UTC",
            ["body is empty", "cron: This schedule fires", "every: This trigger fires"],
        ),
        # A default zone that does not exist costs the frequency check, not the listing.
        ('---\nschedule: "* * * * *"\n---\nx\n', "Not/AZone", []),
    ],
)
def test_task_warnings(text: str, default_zone: str, expected: list[str]) -> None:
    warnings = task_warnings(parse(text), now=NOON_UTC, default_zone=default_zone)
    assert len(warnings) == len(expected), warnings
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


def test_task_warnings_keeps_every_lint_warning() -> None:
    task = parse("---\nexecute: true\nsandbox: {network: true}\n---\nno code\n")
    assert task_warnings(task, now=NOON_UTC, default_zone="UTC") == lint_warnings(task)
