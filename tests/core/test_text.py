"""core/text.py: untrusted text made visible, markup escaped, long text capped."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.markup import escape

from daycare_cli.core.text import cap, escape_markup, shown, visible

# (raw, shown) — every control character a terminal acts on becomes a printable escape.
VISIBLE = [
    ("plain text", "plain text"),
    ("two\nlines\tand a tab", "two\nlines\tand a tab"),
    ("crlf\r\nend", "crlf\nend"),
    ("bare\rCR", "bare\\rCR"),
    ("\x1b[2J\x1b[Hcleared", "\\x1b[2J\\x1b[Hcleared"),
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    (
        "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",
        "\\x1b]8;;http://evil\\x1b\\link\\x1b]8;;\\x1b\\",
    ),
    ("\x9b31m C1 CSI", "\\x9b31m C1 CSI"),
    ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
    ("abc\u202egnp.exe", "abc\\u202egnp.exe"),
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("é ☕ 日本", "é ☕ 日本"),
]


@pytest.mark.parametrize(("raw", "expected"), VISIBLE)
def test_visible(raw, expected):
    assert visible(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["[bold]x[/] [/]", "[/]", "a\\[b]", "ends with \\", "[link=file:///etc]x[/link]", "[1, 2]"],
)
def test_escape_markup_matches_rich(raw):
    assert escape_markup(raw) == escape(raw)


@pytest.mark.parametrize("raw", ["[bold]x[/] [/]", "[/]", "\x1b[31mred[/red]\r", "a\\[b]"])
def test_shown_prints_as_written_without_escapes(raw):
    console = Console(record=True, width=200, force_terminal=True, color_system=None)
    console.print(shown(raw), end="")
    out = console.export_text()
    assert out == visible(raw)
    assert "\x1b" not in out and "\r" not in out


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("x" * 10, 10, "x" * 10),
        ("x" * 11, 10, "x" * 10 + "… [text cut at 10 characters]"),
        ("E" * 7_000_000, 4096, "E" * 4096 + "… [text cut at 4 KiB]"),
    ],
)
def test_cap(text, limit, expected):
    assert cap(text, limit) == expected
