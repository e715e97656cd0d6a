"""What a clock change did to a fire, in words for `cron explain` and `task show`.

- "02:30 does not exist on 2026-03-29: runs at 03:00 +02:00" (the clock jumped over it);
- "02:30 happens twice on 2026-10-25: runs once, at +02:00" (a fixed-time job);
- "02:15 happens twice on 2026-10-25: runs both times, first at +02:00" and
  "02:15 happens twice on 2026-10-25: runs again at +01:00" (a wildcard job).

Pure: the only I/O is zoneinfo's lookups.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from daycare_cli.core.cronclock import Slot

_LISTED = 3  # skipped wall times named one by one; more are given as a span


def _offset(delta: timedelta | None) -> str:
    """`+01:00` for a UTC offset."""
    delta = delta or timedelta(0)
    sign = "-" if delta < timedelta(0) else "+"
    minutes = abs(delta) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _clock(wall: datetime) -> str:
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")


def _walls(walls: tuple[datetime, ...]) -> str:
    """`02:30`, `02:00 and 02:30`, `02:00, 02:15 and 02:30`, `02:00 to 02:59 (60 times)`."""
    clocks = [_clock(w) for w in sorted(walls)]
    if len(clocks) == 1:
        return clocks[0]
    if len(clocks) <= _LISTED:
        return ", ".join(clocks[:-1]) + " and " + clocks[-1]
    return f"{clocks[0]} to {clocks[-1]} ({len(clocks)} times)"


def slot_note(slot: Slot, zone: ZoneInfo) -> str | None:
    """Words for a cron slot a clock change moved or repeated, else None."""
    if slot.moved:
        local = datetime.fromtimestamp(slot.at, zone)
        verb = "does not exist" if len(slot.moved) == 1 else "do not exist"
        runs = "runs" if len(slot.moved) == 1 else "run once"
        note = (
            f"{_walls(slot.moved)} {verb} on {slot.moved[0]:%Y-%m-%d}: {runs} at "
            f"{_clock(local.replace(tzinfo=None))} {_offset(local.utcoffset())}"
        )
        regular = [w for w in slot.walls if w not in slot.moved]
        if regular:
            note += f", with the {_walls(tuple(regular))} fire"
        return note
    if slot.fold is None:
        return None
    wall = slot.walls[0]
    first = wall.replace(tzinfo=zone).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    head = f"{_clock(wall)} happens twice on {wall:%Y-%m-%d}"
    if slot.fold == "once":
        return f"{head}: runs once, at {_offset(first)}"
    if slot.fold == "first":
        return f"{head}: runs both times, first at {_offset(first)}"
    return f"{head}: runs again at {_offset(second)}"


def at_note(wall: datetime, zone: ZoneInfo) -> str | None:
    """Words for an `at` time (naive, in `zone`) that does not exist or happens twice."""
    first = wall.replace(tzinfo=zone)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.timestamp() == second.timestamp():
        return None
    if first.timestamp() > second.timestamp():  # in a gap: read with the offset before it
        local = datetime.fromtimestamp(first.timestamp(), zone)
        return (
            f"{_clock(wall)} does not exist on {wall:%Y-%m-%d}: runs at "
            f"{_clock(local.replace(tzinfo=None))} {_offset(local.utcoffset())}"
        )
    return f"{_clock(wall)} happens twice on {wall:%Y-%m-%d}: runs once, at " + _offset(
        first.utcoffset()
    )
