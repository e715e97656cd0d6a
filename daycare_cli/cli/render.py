"""Output for people and scripts: errors, times, JSON.

Rich is imported only when something is printed for a person; JSON output and the
`--version` fast path never load it. Rich drops colours by itself without a terminal
and honours NO_COLOR.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from daycare_cli.core.text import visible as visible  # the one rule, for the CLI's renderers

if TYPE_CHECKING:
    from rich.console import Console

    from daycare_cli.core.errors import UserError


def console(stderr: bool = False) -> Console:
    """A Rich console on stdout (or stderr), looked up now so test runners can capture it."""
    from rich.console import Console

    # soft_wrap: long lines are left to the terminal, so messages stay one line in logs.
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine output: indented JSON on stdout, keys in a stable order."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def display_path(path: str | os.PathLike[str] | None) -> str:
    """A path as a person wants to read it: relative to the working directory when inside it."""
    if path is None:
        return "<input>"
    text = os.fspath(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return text
    return text if rel.startswith("..") else rel


def error_where(err: UserError, *, relative: bool = True) -> str:
    """`path:line:col` of an error, or "" when it concerns no file or position."""
    if err.path is None and not err.line:
        return ""
    parts = [display_path(err.path) if relative else (err.path or "<input>")]
    if err.line:
        parts.append(str(err.line))
        if err.col:
            parts.append(str(err.col))
    return ":".join(parts)


def error_text(err: UserError, *, relative: bool = False) -> str:
    """One line for JSON and tables: `path:line:col: message`."""
    where = error_where(err, relative=relative)
    return f"{where}: {err.message}" if where else err.message


def error_lines(err: UserError, *, label: str = "error") -> list[tuple[str, str]]:
    """An error as (text, style) lines: the headline, the excerpt with a caret, the fix."""
    lines = [(f"{label}: {error_text(err, relative=True)}", "")]
    if err.excerpt is not None:
        excerpt = err.excerpt.rstrip("\r\n").expandtabs(4)
        lines.append(("  " + excerpt, "dim"))
        if err.col:
            # Tabs before the column are expanded the same way as in the excerpt.
            raw_prefix = err.excerpt[: max(err.col - 1, 0)]
            pad = len(raw_prefix.expandtabs(4))
            lines.append(("  " + " " * pad + "^", "bold red"))
    if err.hint:
        lines.append((f"  fix: {err.hint}", "cyan"))
    return lines


def render_error(err: UserError, *, label: str = "error", stderr: bool = True) -> None:
    """Print a user error (to stderr) the way compilers do: where, what, and how to fix it."""
    from rich.text import Text

    out = console(stderr=stderr)
    for i, (text, style) in enumerate(error_lines(err, label=label)):
        if i == 0:
            head, _, rest = text.partition(": ")
            out.print(Text.assemble((head + ":", "bold red"), " " + rest))
        else:
            out.print(Text(text, style=style))


def warn(message: str) -> None:
    """A warning line on stderr."""
    from rich.text import Text

    console(stderr=True).print(Text.assemble(("warning:", "bold yellow"), " " + message))


def relative(when: datetime, now: datetime) -> str:
    """`in 3h 12m`, `5m ago`, `now`: the two largest units of the distance."""
    seconds = when.timestamp() - now.timestamp()
    future = seconds >= 0
    left = int(abs(seconds))
    if left < 1:
        return "now"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    text = ""
    for i, (unit, size) in enumerate(units):
        if left >= size:
            text = f"{left // size}{unit}"
            if i + 1 < len(units):
                next_unit, next_size = units[i + 1]
                second = (left % size) // next_size
                if second:
                    text += f" {second}{next_unit}"
            break
    return f"in {text}" if future else f"{text} ago"


def local_time(when: datetime, zone: str) -> str:
    """An instant in a zone for people: `Mon 2026-11-23 09:00 +01:00` (seconds when non-zero)."""
    from zoneinfo import ZoneInfo

    local = when.astimezone(ZoneInfo(zone))
    clock = "%H:%M:%S" if local.second else "%H:%M"
    offset = local.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if len(offset) == 5 else offset
    return local.strftime(f"%a %Y-%m-%d {clock} ") + offset


def ago(when: datetime, now: datetime) -> str:
    """The largest unit of a distance: `5m ago`, `in 3h`, `now` (for narrow table cells)."""
    text = relative(when, now)
    if text == "now":
        return text
    if text.startswith("in "):
        return "in " + text[3:].split(" ")[0]
    return text.split(" ")[0] + " ago"


def table_time(when: datetime, zone: str) -> str:
    """An instant in a table whose header names the zone: `11-30 09:00` (`:ss` when set)."""
    from zoneinfo import ZoneInfo

    local = when.astimezone(ZoneInfo(zone))
    return local.strftime("%m-%d %H:%M:%S" if local.second else "%m-%d %H:%M")


def zone_label(zone: str) -> str:
    """A zone for a table header: `UTC` for the UTC aliases, else the IANA name."""
    return "UTC" if zone in ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu") else zone


def when_text(when: datetime, now: datetime, zone: str) -> str:
    """`in 3h 12m (Mon 2026-11-23 09:00 +01:00)`."""
    return f"{relative(when, now)} ({local_time(when, zone)})"


# --- a light table for `task ls` -----------------------------------------------------------
# Rich takes ~50 ms to import and ~60-90 ms to lay out 100 rows on a small machine, more
# than its goal allows the whole `task ls`. This table aligns one-line cells, colours
# them when the output is a colour terminal (NO_COLOR and TERM=dumb respected, FORCE_COLOR
# forces), and shortens chosen columns with "…" only to fit a terminal's width.

STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

Cell = tuple[str, str]  # (text, space-separated style names)


def use_colour(stream: Any) -> bool:
    """True when `stream` is a terminal that wants colour."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def text_width(text: str) -> int:
    """Terminal cells a string takes (wide East Asian characters count 2, combining 0)."""
    import unicodedata

    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` cells with a trailing "…"."""
    if text_width(text) <= width:
        return text
    out = ""
    for char in text:
        if text_width(out + char) > width - 1:
            break
        out += char
    return out + "…"


def print_table(
    headers: list[str],
    rows: list[list[Cell]],
    *,
    shrink: tuple[int | tuple[int, int], ...] = (),
) -> None:
    """Print aligned columns to stdout; on a terminal, columns in `shrink` give way to fit.

    `shrink` lists columns in the order they give way, each down to 16 cells, or to the
    width given as `(column, width)`; a column may appear twice to give way in steps.
    Columns not listed (ids) are never cut. A row shorter than `headers` ends in a cell
    that spans the remaining columns.
    """
    colour = use_colour(sys.stdout)
    widths = [text_width(h) for h in headers]
    for row in rows:
        # A short row's last cell runs across the remaining columns and sets no width.
        cells = row if len(row) == len(headers) else row[:-1]
        for i, (text, _) in enumerate(cells):
            widths[i] = max(widths[i], text_width(text))
    if sys.stdout.isatty():
        import shutil

        room = shutil.get_terminal_size().columns - 2 * (len(headers) - 1)
        for step in shrink:
            i, least = step if isinstance(step, tuple) else (step, 16)
            excess = sum(widths) - room
            if excess > 0:
                widths[i] = max(widths[i] - excess, min(widths[i], least))
        rows = [[(shorten(t, widths[i]), s) for i, (t, s) in enumerate(row)] for row in rows]
    lines = [format_row([(h, "bold") for h in headers], widths, colour)]
    lines.extend(format_row(row, widths, colour) for row in rows)
    sys.stdout.write("\n".join(lines) + "\n")


def format_row(row: list[Cell], widths: list[int], colour: bool) -> str:
    """One table line: cells padded to their column's width, two spaces apart."""
    if len(row) < len(widths):
        widths = [*widths[: len(row) - 1], 0]
    parts = []
    for (text, style), width in zip(row, widths, strict=False):
        padded = text + " " * max(width - text_width(text), 0)
        if colour and style and text:
            codes = ";".join(STYLES[name] for name in style.split())
            padded = f"\x1b[{codes}m{text}\x1b[0m" + padded[len(text) :]
        parts.append(padded)
    return "  ".join(parts).rstrip()


def paint(text: str, style: str, stream: Any = None) -> str:
    """`text` in a style when `stream` (default stdout) is a colour terminal."""
    if not use_colour(stream or sys.stdout):
        return text
    codes = ";".join(STYLES[name] for name in style.split())
    return f"\x1b[{codes}m{text}\x1b[0m"
