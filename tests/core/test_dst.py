"""DST transitions and how systemd and Kubernetes fire around them, compared with daycare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daycare_cli.core.dst import describe_differences, engine_differences, transitions
from daycare_cli.core.task import CronTrigger

NOW = datetime(2026, 1, 1, tzinfo=UTC)
YEAR = NOW + timedelta(days=365)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Berlin", [(datetime(2026, 3, 29, 1, 0), 1, 2),
                           (datetime(2026, 10, 25, 1, 0), 2, 1)]),
        ("Australia/Lord_Howe", [(datetime(2026, 4, 4, 15, 0), 11, 10.5),
                                 (datetime(2026, 10, 3, 15, 30), 10.5, 11)]),
        ("Asia/Tokyo", []),
        ("UTC", []),
    ],
)  # fmt: skip
def test_transitions(zone: str, expected: list[tuple[datetime, float, float]]) -> None:
    found = [
        (t.at.replace(tzinfo=None), t.before / timedelta(hours=1), t.after / timedelta(hours=1))
        for t in transitions(zone, NOW, YEAR)
    ]
    assert found == expected


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (cron, engine, only daycare fires, only the engine fires) around Berlin's 2026 transitions
CASES = [
    ("30 2 * * *", "systemd", ["2026-03-29T03:00+02:00"], []),
    ("30 2 * * *", "kubernetes", ["2026-03-29T03:00+02:00"], ["2026-10-25T02:30+01:00"]),
    ("*/30 2 * * *", "systemd", ["2026-10-25T02:00+01:00", "2026-10-25T02:30+01:00"], []),
    ("*/30 2 * * *", "kubernetes", [], []),
    ("0 9 * * *", "systemd", [], []),
    ("0 9 * * *", "kubernetes", [], []),
]


@pytest.mark.parametrize(("cron", "engine", "ours", "theirs"), CASES)
def test_engine_differences_around_berlin_transitions(
    cron: str, engine: str, ours: list[str], theirs: list[str]
) -> None:
    diffs = engine_differences(CronTrigger(cron), "Europe/Berlin", engine, now=NOW, years=1)  # type: ignore[arg-type]
    assert [t for d in diffs for t in d.only_daycare] == [at(x) for x in ours]
    assert [t for d in diffs for t in d.only_engine] == [at(x) for x in theirs]


def test_describe_names_the_day_and_the_slots() -> None:
    diffs = engine_differences(CronTrigger("30 2 * * *"), "Europe/Berlin", "kubernetes", now=NOW)
    text = describe_differences(diffs, "Europe/Berlin", "kubernetes")
    assert text is not None
    assert "clocks go forward (next on 2026-03-29) daycare fires at 03:00+0200" in text
    assert "clocks go back (next on 2026-10-25) Kubernetes fires at 02:30+0100" in text
    assert describe_differences([], "Europe/Berlin", "systemd") is None
