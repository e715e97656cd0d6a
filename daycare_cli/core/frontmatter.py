"""Split a task file into frontmatter and body; decode its bytes; positions in its text.

The rules of docs/task-file.md: frontmatter exists only when line 1 (after a BOM) is `---`,
and ends at the first later line that is `---` or `...`. Only a newline breaks lines
(not \\v or U+2028).
"""

from __future__ import annotations

from dataclasses import dataclass

from daycare_cli.core.errors import TaskFileError


@dataclass(frozen=True)
class SplitFile:
    """A task file cut into frontmatter and body.

    `frontmatter` is the raw text between the delimiters (None when the file has none),
    `body` the raw text after the closing delimiter (the whole file without one). Both
    keep the file's newlines. `fm_line` is the 1-based line of the first frontmatter line
    (0 without frontmatter), `body_line` that of the first body line.
    """

    frontmatter: str | None
    body: str
    fm_line: int
    body_line: int
    newline: str
    bom: bool


def _is_delimiter(line: str, marks: tuple[str, ...]) -> bool:
    # Trailing blanks are forgiven: an editor's stray space must not turn the
    # frontmatter into body text silently.
    return line.rstrip("\r\n").rstrip(" \t") in marks


def split_file(text: str, path: str) -> SplitFile:
    """Cut a task file into frontmatter and body (docs/task-file.md, "How a file is read").

    Frontmatter exists only if line 1 (after a BOM) is `---`; it ends at the first later
    line that is `---` or `...`; everything after is the body, more `---` lines included.
    Raises TaskFileError for an opening `---` without a close.
    """
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
    first_end = text.find("\n")
    newline = "\r\n" if first_end > 0 and text[first_end - 1] == "\r" else "\n"
    first = text if first_end < 0 else text[:first_end]
    if not _is_delimiter(first, ("---",)):
        return SplitFile(None, text, 0, 1, newline, bom)
    # Walk the lines after the opening one; only "\n" breaks lines (not \v, \u2028...).
    start = pos = len(text) if first_end < 0 else first_end + 1
    line = 2
    while pos < len(text):
        end = text.find("\n", pos)
        stop = len(text) if end < 0 else end + 1
        if _is_delimiter(text[pos:stop], ("---", "...")):
            return SplitFile(text[start:pos], text[stop:], 2, line + 1, newline, bom)
        pos, line = stop, line + 1
    raise TaskFileError(
        "frontmatter is not closed: line 1 is `---` but no later line is `---`",
        path=path,
        line=1,
        col=1,
        hint="add a line `---` after the settings, before the prompt text",
        excerpt=first.rstrip("\r"),
    )


def decode(data: bytes | str, path: str) -> str:
    """UTF-8 text of a file, with a positioned error for binary or mis-encoded input."""
    if isinstance(data, str):
        nul = data.find("\x00")
        if nul >= 0:
            line, col = offset_position(data, nul)
            raise TaskFileError(
                "not a text file: it contains a NUL character",
                path=path,
                line=line,
                col=col,
                hint="task files are UTF-8 Markdown; check that this is the file you meant",
            )
        return data
    nul_byte = data.find(b"\x00")
    if nul_byte >= 0:
        line = data.count(b"\n", 0, nul_byte) + 1
        col = nul_byte - (data.rfind(b"\n", 0, nul_byte) + 1) + 1
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise TaskFileError(
            "not a text file: it contains a NUL byte",
            path=path,
            line=line,
            col=col,
            hint="re-save the file as UTF-8"
            if utf16
            else "task files are UTF-8 Markdown; check that this is the file you meant",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
        line = data.count(b"\n", 0, bad) + 1
        line_start = data.rfind(b"\n", 0, bad) + 1
        line_end = data.find(b"\n", bad)
        raw_line = data[line_start : line_end if line_end >= 0 else len(data)]
        prefix = data[line_start:bad].decode("utf-8", errors="replace")
        raise TaskFileError(
            f"not valid UTF-8: byte 0x{data[bad]:02x} cannot be decoded",
            path=path,
            line=line,
            col=len(prefix) + 1,
            hint="re-save the file with UTF-8 encoding",
            excerpt=raw_line.decode("utf-8", errors="replace").rstrip("\r"),
        ) from None


def source_line(text: str, line: int) -> str | None:
    """Line `line` (1-based) of the text without its newline, for error excerpts."""
    lines = text.split("\n")
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else None


def offset_position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, col) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col
