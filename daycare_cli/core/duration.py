"""Durations in task files: `90s`, `15m`, `2h`, `1d`, `1h30m` or seconds (DESIGN.md §3)."""

from __future__ import annotations

import math
import re

_UNITS: dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}

# Components in falling order, each at most once: "1d2h30m15s", "1.5h", "90s".
_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?\s*"
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?\s*"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?\s*"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")

EXAMPLES = "90s, 15m, 2h, 1d, 1h30m or a number of seconds"


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration: `"90s"`, `"15m"`, `"2h"`, `"1d"`, `"1h30m"`, or a number of seconds.

    Raises ValueError, with the accepted forms in the message, for anything else and for
    negative, infinite or NaN values.
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
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip().lower()
    if text.startswith("-") and len(text) > 1:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"invalid duration {value!r}: use {EXAMPLES}")
    return sum(float(n) * _UNITS[unit] for unit, n in match.groupdict().items() if n is not None)


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
    for unit, size in _UNITS.items():
        count, whole = divmod(whole, size)
        if unit == "s":
            count_f = count + fraction
            if count_f:
                parts.append(f"{count_f:g}s" if fraction else f"{count}s")
        elif count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
