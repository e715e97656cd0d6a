"""Tests for core/frontmatter.py: cutting a file into frontmatter and body, positions."""

from __future__ import annotations

import pytest

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.frontmatter import (
    SplitFile,
    decode,
    offset_position,
    source_line,
    split_file,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\na: 1\n---\nbody\n", SplitFile("a: 1\n", "body\n", 2, 4, "\n", False)),
        ("---\na: 1\n...\nbody\n", SplitFile("a: 1\n", "body\n", 2, 4, "\n", False)),
        ("---\n---\n", SplitFile("", "", 2, 3, "\n", False)),
        ("---\na: 1\n---", SplitFile("a: 1\n", "", 2, 4, "\n", False)),
        ("---\na: 1\n---\nx\n---\ny\n", SplitFile("a: 1\n", "x\n---\ny\n", 2, 4, "\n", False)),
        ("---\na: 1\n--- \nbody", SplitFile("a: 1\n", "body", 2, 4, "\n", False)),
        ("---\r\na: 1\r\n---\r\nb\r\n", SplitFile("a: 1\r\n", "b\r\n", 2, 4, "\r\n", False)),
        ("\ufeff---\na: 1\n---\nb\n", SplitFile("a: 1\n", "b\n", 2, 4, "\n", True)),
        ("plain body\n---\n", SplitFile(None, "plain body\n---\n", 0, 1, "\n", False)),
        ("\n---\na: 1\n---\n", SplitFile(None, "\n---\na: 1\n---\n", 0, 1, "\n", False)),
        ("----\na\n", SplitFile(None, "----\na\n", 0, 1, "\n", False)),
        ("\ufeffbody", SplitFile(None, "body", 0, 1, "\n", True)),
        ("", SplitFile(None, "", 0, 1, "\n", False)),
        ("---\na: |\n  x\n\n  y\n---\n", SplitFile("a: |\n  x\n\n  y\n", "", 2, 7, "\n", False)),
    ],
)
def test_split_file(text: str, expected: SplitFile) -> None:
    assert split_file(text, "t.md") == expected


def test_split_file_unclosed() -> None:
    with pytest.raises(TaskFileError) as info:
        split_file("---\nname: x\n", "t.md")
    assert (info.value.line, info.value.col, info.value.excerpt) == (1, 1, "---")


@pytest.mark.parametrize(
    ("text", "offset", "position"),
    [
        ("abc", 0, (1, 1)),
        ("abc", 2, (1, 3)),
        ("ab\ncd", 3, (2, 1)),
        ("ab\ncd", 4, (2, 2)),
        ("ab\r\ncd\n\nx", 8, (4, 1)),
        ("a\vb\u2028c\nd", 6, (2, 1)),  # only "\n" breaks lines
    ],
)
def test_offset_position(text: str, offset: int, position: tuple[int, int]) -> None:
    assert offset_position(text, offset) == position


@pytest.mark.parametrize(
    ("line", "expected"),
    [(1, "---"), (2, "name: x"), (3, ""), (4, None), (0, None), (-1, None)],
)
def test_source_line(line: int, expected: str | None) -> None:
    assert source_line("---\r\nname: x\n", line) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"---\nname: x\n", "---\nname: x\n"),
        ("\ufeffname".encode(), "\ufeffname"),  # the BOM is the splitter's business
        ("already text", "already text"),
        ("Grüße".encode(), "Grüße"),
    ],
)
def test_decode(data: bytes | str, expected: str) -> None:
    assert decode(data, "t.md") == expected


@pytest.mark.parametrize(
    ("data", "message", "line", "col", "hint"),
    [
        (b"ab\ncd\x00", "NUL byte", 2, 3, "check that this is the file you meant"),
        ("ab\ncd\x00", "NUL character", 2, 3, "check that this is the file you meant"),
        ("name".encode("utf-16"), "NUL byte", 1, 4, "re-save the file as UTF-8"),
        (b"name: caf\xe9\n", "byte 0xe9 cannot be decoded", 1, 10, "UTF-8 encoding"),
        (b"a\nb\xc3\xa4 \xff", "byte 0xff", 2, 4, "UTF-8 encoding"),
    ],
)
def test_decode_errors(data: bytes | str, message: str, line: int, col: int, hint: str) -> None:
    with pytest.raises(TaskFileError) as info:
        decode(data, "t.md")
    assert message in info.value.message
    assert (info.value.path, info.value.line, info.value.col) == ("t.md", line, col)
    assert hint in (info.value.hint or "")
