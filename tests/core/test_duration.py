"""Tests for core/duration.py: the duration forms of task files and their shortest spelling."""

from __future__ import annotations

import pytest

from daycare_cli.core.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("  45s ", 45.0),
        ("2H", 7200.0),
        # systemd's spellings (systemd.time(7))
        ("15min", 900.0),
        ("15 min", 900.0),
        ("15 minutes", 900.0),
        ("1 minute", 60.0),
        ("90sec", 90.0),
        ("2 hours", 7200.0),
        ("2hr", 7200.0),
        ("1 day", 86400.0),
        ("3 days 4 hours", 3 * 86400.0 + 4 * 3600),
        ("1w", 604800.0),
        ("2 weeks", 1209600.0),
        ("500ms", 0.5),
        ("1s 500ms", 1.5),
        ("1h 30min", 5400.0),
        ("366d", 366 * 86400.0),
        (366 * 86400, 366 * 86400.0),
        ("90", 90.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (90, 90.0),
        (0, 0.0),
        (1.25, 1.25),
    ],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid duration"),
        ("abc", "invalid duration"),
        ("5x", "invalid duration"),
        ("1x", "unknown unit `x`"),
        ("2 months", "no fixed length"),
        ("1y", "no fixed length"),
        ("15 minutes 1h", "largest first"),
        ("1m 2", "invalid duration"),
        ("367d", r"at most 366 days \(366d\), not 367d"),
        ("99999999999d", "at most 366 days"),
        ("3000000d", "at most 366 days"),
        (366 * 86400 + 1, "at most 366 days"),
        (1e300, "at most 366 days"),
        ("30m1h", "invalid duration"),  # units in falling order only
        ("1h1h", "invalid duration"),
        ("h", "invalid duration"),
        ("-5s", "cannot be negative"),
        ("-5", "cannot be negative"),
        (-1, "cannot be negative"),
        (-0.5, "cannot be negative"),
        (float("inf"), "finite"),
        (float("nan"), "finite"),
        (True, "not a boolean"),
    ],
)
def test_parse_duration_rejects(value: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_duration(value)
    if isinstance(value, str) and "invalid" in message and "unknown unit" not in message:
        assert "90s, 15m" in str(info.value)  # the message shows the accepted forms


def test_parse_duration_rejects_other_types() -> None:
    with pytest.raises(ValueError, match="not list"):
        parse_duration([1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (90, "1m30s"),
        (900, "15m"),
        (5400, "1h30m"),
        (3600, "1h"),
        (86400, "1d"),
        (93784, "1d2h3m4s"),
        (0.5, "0.5s"),
        (61.5, "1m1.5s"),
        (900.0, "15m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 61, 3599, 3601, 86399, 90061, 1.5, 7200.25])
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(-1)
