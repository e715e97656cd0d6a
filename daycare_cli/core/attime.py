"""Times people say for `--at`: `+2h`, `in 30m`, `tomorrow 09:00`, `next monday 08:00`, ISO.

Pure: `now` and the zone are arguments. Wall-clock phrases are read in the task's zone;
a time that does not exist there (clocks jump forward) is refused with the reason, and
one that happens twice (clocks go back) means the first. `parse_at` returns the instant
and whether the text was ISO, so the CLI can keep an ISO value as the user wrote it and
write a phrase as the absolute time it resolved to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daycare_cli.core.duration import parse_duration
from daycare_cli.core.errors import ScheduleError

EXAMPLES = "ISO (2026-11-24T12:00), +2h, in 30m, tomorrow 09:00, next monday 08:00, 17:30"

WEEKDAYS = {
    name: i
    for i, names in enumerate(
        (
            ("monday", "mon"),
            ("tuesday", "tue", "tues"),
            ("wednesday", "wed"),
            ("thursday", "thu", "thurs"),
            ("friday", "fri"),
            ("saturday", "sat"),
            ("sunday", "sun"),
        )
    )
    for name in names
}

_CLOCK_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*(am|pm)?$")
_IN_RE = re.compile(r"^(?:\+|in\s+)(.+)$")
# "2 hours", "30 minutes", "1 day 2 hours": spelled units become the short ones.
_SPELLED_UNITS = (
    (re.compile(r"(\d+(?:\.\d+)?)\s*(?:days?)\b"), r"\1d"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*(?:hours?|hrs?)\b"), r"\1h"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*(?:minutes?|mins?)\b"), r"\1m"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*(?:seconds?|secs?)\b"), r"\1s"),
)


@dataclass(frozen=True)
class AtTime:
    """What `--at` resolved to: the instant (aware, in the zone) and whether it was ISO."""

    when: datetime
    iso: bool


def parse_at(text: str, *, now: datetime, zone: str) -> AtTime:
    """The instant a person means by `text`, read in `zone` as of `now` (aware).

    Raises ScheduleError naming the accepted forms for anything else. The result may be
    in the past (ISO input, `today 08:00` after eight); the caller decides about that.
    """
    tz = _zone(zone)
    raw = text.strip()
    said = " ".join(raw.lower().split())
    if not said:
        raise _error(text)
    iso = _iso(raw, tz)
    if iso is not None:
        return AtTime(iso, iso=True)
    local_now = now.astimezone(tz)
    relative = _IN_RE.match(said)
    if relative:
        amount = relative.group(1)
        for pattern, short in _SPELLED_UNITS:
            amount = pattern.sub(short, amount)
        try:
            seconds = parse_duration(amount.replace(" ", ""))
        except ValueError:
            raise _error(text) from None
        # To the minute, like at(1): `+2h` at 10:41:37 is 12:41.
        when = (now + timedelta(seconds=seconds)).astimezone(tz)
        return AtTime(when.replace(second=0, microsecond=0), iso=False)
    words = said.split(" ")
    day: date | None = None
    if words[0] in ("today", "tomorrow"):
        day = local_now.date() + timedelta(days=1 if words[0] == "tomorrow" else 0)
        words = words[1:]
    else:
        if words[0] == "next":
            if len(words) < 2 or words[1] not in WEEKDAYS:
                raise _error(text)  # "next" names a weekday: "next monday 08:00"
            words = words[1:]
        if words[0] in WEEKDAYS:
            ahead = (WEEKDAYS[words[0]] - local_now.weekday() - 1) % 7 + 1  # 1..7 days
            day = local_now.date() + timedelta(days=ahead)
            words = words[1:]
    if words[:1] == ["at"]:
        words = words[1:]
    clock = _clock(" ".join(words)) if words else None
    if clock is None:
        raise _error(text)
    if day is None:
        # A bare clock time is the next one: today if still ahead, else tomorrow.
        day = local_now.date()
        if _local(day, clock, tz, text) <= now:
            day += timedelta(days=1)
    return AtTime(_local(day, clock, tz, text), iso=False)


def format_at(when: datetime) -> str:
    """An instant as the `at:` value written to a file: ISO with its offset, to the second."""
    return when.isoformat(timespec="seconds")


def _zone(zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {zone!r}", hint="use an IANA name like Europe/Berlin"
        ) from None


def _iso(text: str, tz: ZoneInfo) -> datetime | None:
    """An ISO date and time (a naive one in `tz`); None when `text` is not ISO."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(
            f"--at {text!r} is not a valid ISO date and time",
            hint="e.g. --at 2026-11-24T12:00 (the task's zone) or 2026-11-24T12:00+01:00",
        ) from None
    if value.tzinfo is None:
        return _local(value.date(), value.time(), tz, text)
    return value


def _clock(text: str) -> time | None:
    """`09:00`, `9`, `9am`, `9:30pm`, `17:30:15`, `noon`, `midnight`; None otherwise."""
    if text == "noon":
        return time(12, 0)
    if text == "midnight":
        return time(0, 0)
    m = _CLOCK_RE.match(text)
    if m is None:
        return None
    hour, minute, second = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    meridiem = m.group(4)
    if meridiem is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    elif m.group(2) is None:
        return None  # a bare number is not a time ("in 5" is not "5 o'clock")
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


def _local(day: date, clock: time, tz: ZoneInfo, text: str) -> datetime:
    """A wall-clock time in `tz`, refused when the clocks skip it; the first of two."""
    wall = datetime.combine(day, clock, tzinfo=tz)
    back = wall.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) != wall.replace(tzinfo=None):
        raise ScheduleError(
            f"{wall:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks skip it "
            "(daylight saving time starts)",
            hint=f"--at {text!r} needs another time, e.g. one hour later",
        )
    return wall


def _error(text: str) -> ScheduleError:
    return ScheduleError(f"cannot read --at {text!r} as a time", hint=f"use {EXAMPLES}")
