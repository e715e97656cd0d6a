"""Durations in task files, spelled as systemd spells them (docs/task-file.md).

`90s`, `15m`, `15min`, `15 minutes`, `2h`, `1d`, `1w`, `1h30m`, `1h 30m`, `1.5h`, `500ms`
or a number of seconds. Units from weeks down to milliseconds, each at most once and
largest first (`30m1h` is refused: it is usually a typo). Months and years are refused:
they have no fixed length. No duration is longer than 366 days (MAX_SECONDS), so every
value a task file may hold is one the daemon can add to a date.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS: dict[str, float] = {
    "w": 604800,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
    "ms": 0.001,
}

# systemd's spellings (systemd.time(7)), read case-insensitively.
_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("w", "week", "weeks"), "w"),
    **dict.fromkeys(("d", "day", "days"), "d"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("ms", "msec", "msecs"), "ms"),
}
_NO_FIXED_LENGTH = ("month", "months", "y", "year", "years")
_ORDER = tuple(_UNIT_SECONDS)

_PART_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]+)\s*")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")

# The longest duration a task file may hold: every, jitter, catch_up_window, timeouts.
MAX_SECONDS = 366 * 86400.0

EXAMPLES = "90s, 15m, 15min, 2h, 1h30m, 1d or a number of seconds"


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration: `"90s"`, `"15 minutes"`, `"1h 30m"`, or a number of seconds.

    Raises ValueError, with the accepted forms or the bound in the message, for anything
    else: negative, infinite or NaN values and durations longer than 366 days.
    """
    if isinstance(value, bool):  # bool is an int subclass; `true` is not a duration
        raise ValueError(f"expected a duration ({EXAMPLES}), not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(f"expected a duration ({EXAMPLES}), not {type(value).__name__}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, not {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    if seconds > MAX_SECONDS:
        shown = value.strip() if isinstance(value, str) else f"{value:g}s"
        raise ValueError(f"a duration can be at most 366 days (366d), not {shown}")
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip()
    if text.startswith("-") and len(text) > 1:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    total, position, last = 0.0, 0, -1
    while position < len(text):
        match = _PART_RE.match(text, position)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use {EXAMPLES}")
        number, word = match.groups()
        unit = _SPELLINGS.get(word.lower())
        if unit is None:
            if word.lower() in _NO_FIXED_LENGTH:
                raise ValueError(
                    f"invalid duration {value!r}: months and years have no fixed length; "
                    "write days, e.g. 30d"
                )
            raise ValueError(f"invalid duration {value!r}: unknown unit `{word}`; use {EXAMPLES}")
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(
                f"invalid duration {value!r}: write each unit once, largest first, e.g. {EXAMPLES}"
            )
        last = rank
        total += float(number) * _UNIT_SECONDS[unit]
        position = match.end()
    if last < 0:
        raise ValueError(f"invalid duration {value!r}: use {EXAMPLES}")
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form of a duration: 900 -> `15m`, 5400 -> `1h30m`, 90 -> `1m30s`.

    Whole units from days down to seconds; a fraction of a second is kept on the seconds
    (`1.5s`). Zero is `0s`.
    """
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds!r}")
    whole = int(seconds)
    fraction = round(seconds - whole, 6)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if unit == "s":
            count_f = count + fraction
            if count_f:
                parts.append(f"{count_f:g}s" if fraction else f"{count}s")
        elif count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
