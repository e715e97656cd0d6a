"""`--at` phrases: one case a line, `now` and the zone given, DST days included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daycare_cli.core.attime import format_at, parse_at
from daycare_cli.core.errors import ScheduleError

# Sunday 2026-11-29 23:26:19 UTC = Monday 00:26:19 in Berlin.
NOW = datetime(2026, 11, 29, 23, 26, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "zone", "expected", "iso"),
    [
        ("+2h", "Europe/Berlin", "2026-11-30T02:26:00+01:00", False),
        ("in 30m", "Europe/Berlin", "2026-11-30T00:56:00+01:00", False),
        ("in 2 hours", "UTC", "2026-11-30T01:26:00+00:00", False),
        ("in 1h 30m", "UTC", "2026-11-30T00:56:00+00:00", False),
        ("+1d", "UTC", "2026-11-30T23:26:00+00:00", False),
        ("tomorrow 09:00", "Europe/Berlin", "2026-12-01T09:00:00+01:00", False),  # Monday now
        ("tomorrow 09:00", "UTC", "2026-11-30T09:00:00+00:00", False),
        ("today 17:30", "UTC", "2026-11-29T17:30:00+00:00", False),  # past: the CLI refuses
        ("Tomorrow  9am", "UTC", "2026-11-30T09:00:00+00:00", False),
        ("tomorrow at 9:30pm", "UTC", "2026-11-30T21:30:00+00:00", False),
        ("tomorrow noon", "UTC", "2026-11-30T12:00:00+00:00", False),
        ("next monday 08:00", "UTC", "2026-11-30T08:00:00+00:00", False),
        ("next monday 08:00", "Europe/Berlin", "2026-12-07T08:00:00+01:00", False),  # a Monday
        ("monday 08:00", "Europe/Berlin", "2026-12-07T08:00:00+01:00", False),
        ("next fri 18:00", "UTC", "2026-12-04T18:00:00+00:00", False),
        ("23:59", "UTC", "2026-11-29T23:59:00+00:00", False),  # later today
        ("23:00", "UTC", "2026-11-30T23:00:00+00:00", False),  # passed today: tomorrow
        ("2026-12-24T18:00", "Europe/Berlin", "2026-12-24T18:00:00+01:00", True),
        ("2026-12-24 18:00", "America/New_York", "2026-12-24T18:00:00-05:00", True),
        ("2026-12-24T18:00+09:00", "Europe/Berlin", "2026-12-24T18:00:00+09:00", True),
        ("2001-01-01", "UTC", "2001-01-01T00:00:00+00:00", True),
        # DST: the clocks go back at 03:00 on 2026-10-25 in Berlin: 02:30 is the first one.
        ("2026-10-25T02:30", "Europe/Berlin", "2026-10-25T02:30:00+02:00", True),
    ],
)
def test_parse_at(text: str, zone: str, expected: str, iso: bool) -> None:
    at = parse_at(text, now=NOW, zone=zone)
    assert (format_at(at.when), at.iso) == (expected, iso)


@pytest.mark.parametrize(
    ("text", "zone", "message"),
    [
        ("tomorrow", "UTC", "cannot read --at 'tomorrow'"),
        ("soon", "UTC", "cannot read"),
        ("", "UTC", "cannot read"),
        ("in five minutes", "UTC", "cannot read"),
        ("tomorrow 25:00", "UTC", "cannot read"),
        ("tomorrow 13pm", "UTC", "cannot read"),
        ("next 09:00", "UTC", "cannot read"),
        ("2026-13-01T00:00", "UTC", "not a valid ISO date"),
        ("tomorrow 09:00", "Mars/Base", "unknown time zone"),
        # The clocks jump from 02:00 to 03:00 on 2026-03-29 in Berlin.
        ("2026-03-29T02:30", "Europe/Berlin", "does not exist in Europe/Berlin"),
    ],
)
def test_parse_at_refuses(text: str, zone: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_at(text, now=NOW, zone=zone)
    assert message in caught.value.message
    assert caught.value.hint


def test_a_skipped_wall_time_is_refused_for_phrases_too() -> None:
    before = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="clocks skip it"):
        parse_at("tomorrow 02:30", now=before, zone="Europe/Berlin")
