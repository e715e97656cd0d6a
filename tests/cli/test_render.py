"""Rendering: relative times, local times, errors with carets, the light table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daycare_cli.cli.render import error_lines, local_time, relative, shorten, text_width
from daycare_cli.core.errors import TaskFileError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(0), "now"),
        (timedelta(seconds=45), "in 45s"),
        (timedelta(minutes=2, seconds=5), "in 2m 5s"),
        (timedelta(hours=3, minutes=12, seconds=40), "in 3h 12m"),
        (timedelta(hours=3), "in 3h"),
        (timedelta(days=1, minutes=5), "in 1d"),
        (timedelta(days=2, hours=13), "in 2d 13h"),
        (timedelta(minutes=-5), "5m ago"),
        (timedelta(hours=-1, minutes=-30), "1h 30m ago"),
    ],
)
def test_relative(delta: timedelta, words: str) -> None:
    assert relative(NOW + delta, NOW) == words


@pytest.mark.parametrize(
    ("when", "zone", "text"),
    [
        (datetime(2026, 11, 23, 8, 0, tzinfo=UTC), "Europe/Berlin", "Mon 2026-11-23 09:00 +01:00"),
        (
            datetime(2026, 7, 1, 8, 0, 30, tzinfo=UTC),
            "Europe/Berlin",
            "Wed 2026-07-01 10:00:30 +02:00",
        ),
        (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), "America/New_York", "Sun 2026-03-08 03:00 -04:00"),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "Asia/Kolkata", "Thu 2026-01-01 05:30 +05:30"),
    ],
)
def test_local_time(when: datetime, zone: str, text: str) -> None:
    assert local_time(when, zone) == text


@pytest.mark.parametrize(
    ("excerpt", "col", "caret"),
    [
        ("schedule: */15 * * * *", 11, "            ^"),
        ("\tx: [a", 5, "  " + " " * 7 + "^"),  # a tab before the column counts as 4
        ("name: x", 0, None),
    ],
)
def test_error_lines_put_the_caret_under_the_column(
    excerpt: str, col: int, caret: str | None
) -> None:
    err = TaskFileError("msg", path="/abs/t.md", line=3, col=col, hint="do this", excerpt=excerpt)
    lines = [text for text, _ in error_lines(err)]
    assert lines[0] == ("error: /abs/t.md:3:" + f"{col}: msg" if col else "error: /abs/t.md:3: msg")
    assert lines[1] == "  " + excerpt.expandtabs(4)
    if caret is None:
        assert lines[2:] == ["  fix: do this"]
    else:
        assert lines[2:] == [caret, "  fix: do this"]


def test_an_error_without_a_file_is_one_line() -> None:
    assert [t for t, _ in error_lines(TaskFileError("nothing written"))] == [
        "error: nothing written"
    ]


@pytest.mark.parametrize(
    ("text", "width", "short"),
    [("abcdef", 10, "abcdef"), ("abcdef", 4, "abc…"), ("日本語テキスト", 7, "日本語…")],
)
def test_shorten(text: str, width: int, short: str) -> None:
    assert shorten(text, width) == short
    assert text_width(short) <= width
