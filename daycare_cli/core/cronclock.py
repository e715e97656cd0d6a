"""When a cron expression fires in a time zone: cronie's clock, DST included.

cronie (`src/cron.c`, the main loop) keeps a *virtual* wall-clock minute and, every time
it wakes, compares it with the real wall-clock minute. Four cases:

- one minute later (the usual case): run every job that matches the new minute;
- 2 to 5 minutes later: run every job for each minute in between, at once;
- 6 minutes to 3 hours later (the clock jumped forward, DST begins): run the *wildcard*
  jobs (minute or hour starting with `*`) for the current minute only, and the
  *fixed-time* jobs for every minute jumped over, at once;
- earlier, by up to 3 hours (DST ends): run only the wildcard jobs, each real minute,
  until the wall clock is back where it was; fixed-time jobs do not run twice;
- anything else is a clock change: run every job for the current minute and start over.

Per matching wall-clock minute that gives, with transitions days apart (they are at
least a week apart in every zone since 1970):

- a minute that happens once fires then;
- a minute the clock jumps over (a gap of g minutes) fires at the jump when g <= 4, or
  when 5 <= g <= 179 and the job is fixed-time; otherwise it does not fire;
- a minute that happens twice (a fold of f minutes) fires the first time, and again the
  second time when the job is a wildcard job or f >= 182.

cronie reads the zone's offset again only when the `isdst` flag flips; here the offset
is the zone's at every instant, which is the same thing for every DST change and also
follows a zone that changes its standard offset (cronie keeps the old one until restarted).

Pure: instants are POSIX timestamps; the only I/O is zoneinfo's lookups.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from daycare_cli.core.cronspec import CronSpec

# Give up after this many years without a slot (normalize_cron refuses rarer ones).
MAX_YEARS = 60
_LAST_YEAR = 9998  # datetime stops at 9999; leave room for a day of arithmetic

# cronie's thresholds, in minutes of difference between the clock and its virtual clock.
_SMALL_GAP = 4  # a jump of 1-4 minutes runs everything for each minute jumped over
_LARGE_GAP = 180  # a jump of 3 hours or more runs nothing it jumped over
_LARGE_FOLD = 182  # a step back of 182 minutes or more reruns everything


@dataclass(frozen=True)
class Slot:
    """One fire: its instant and the wall-clock times in the zone it stands for.

    `walls` are the matching wall-clock minutes (naive) that run at `at`; `moved` those
    of them that do not exist that day (the clock jumped over them). `fold` is set when
    the wall time happens twice: "once" (runs the first time only), "first" (runs both
    times; this is the first), "again" (this is the second time).
    """

    at: float
    walls: tuple[datetime, ...]
    moved: tuple[datetime, ...] = ()
    fold: str | None = None


def cron_slots(spec: CronSpec, zone: ZoneInfo, after: float) -> Iterator[Slot]:
    """The slots of `spec` in `zone` strictly after the instant `after`, oldest first."""
    local = datetime.fromtimestamp(after, zone)
    wall = local.replace(tzinfo=None)
    try:
        later = datetime.fromtimestamp(after + 86400, zone)
    except (OverflowError, ValueError):
        later = local
    # A clock going back within a day repeats wall times earlier than the current one.
    shift = (later.utcoffset() or timedelta(0)) - (local.utcoffset() or timedelta(0))
    if shift < timedelta(0):
        wall += shift
    max_year = min(wall.year + MAX_YEARS, _LAST_YEAR)
    pending: list[tuple[float, int, Slot]] = []
    seq = 0
    cursor = (wall.year, wall.month, wall.day, wall.hour, wall.minute)
    while True:
        found = spec.next_wall(*cursor, max_year=max_year)
        if found is None:
            break
        naive = datetime(*found)
        first = naive.replace(tzinfo=zone).timestamp()
        second = naive.replace(tzinfo=zone, fold=1).timestamp()
        # No later wall time fires before this one's earliest instant (a gap's jump
        # comes after `second`), so everything pending before it is final.
        bound = min(first, second)
        while pending and pending[0][0] < bound:
            slot = _pop_merged(pending)
            if slot.at > after:
                yield slot
        for slot in _slots_of(naive, first, second, spec.wildcard, zone):
            seq += 1
            heapq.heappush(pending, (slot.at, seq, slot))
        nxt = naive + timedelta(minutes=1)
        cursor = (nxt.year, nxt.month, nxt.day, nxt.hour, nxt.minute)
    while pending:
        slot = _pop_merged(pending)
        if slot.at > after:
            yield slot


def _slots_of(
    naive: datetime, first: float, second: float, wildcard: bool, zone: ZoneInfo
) -> list[Slot]:
    """The fires of one matching wall-clock minute (see the module docstring)."""
    if first == second:
        return [Slot(first, (naive,))]
    if first > second:  # in a gap: `first` reads it with the old offset, after the jump
        gap = round(first - second) // 60
        if gap <= _SMALL_GAP or (gap < _LARGE_GAP and not wildcard):
            return [Slot(_jump(zone, second, first), (naive,), moved=(naive,))]
        return []
    fold = round(second - first) // 60
    if wildcard or fold >= _LARGE_FOLD:
        return [Slot(first, (naive,), fold="first"), Slot(second, (naive,), fold="again")]
    return [Slot(first, (naive,), fold="once")]


def _jump(zone: ZoneInfo, before: float, after: float) -> float:
    """The instant the offset changes, in (before, after] (whole seconds, by bisection)."""
    target = datetime.fromtimestamp(after, zone).utcoffset()
    low, high = int(before), int(after)
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return float(high)


def _pop_merged(pending: list[tuple[float, int, Slot]]) -> Slot:
    """Pop the oldest slot, merged with any other at the same instant."""
    at, _, slot = heapq.heappop(pending)
    while pending and pending[0][0] == at:
        _, _, other = heapq.heappop(pending)
        slot = Slot(
            at,
            slot.walls + other.walls,
            slot.moved + other.moved,
            slot.fold or other.fold,
        )
    return slot


def utc(at: float) -> datetime:
    """A slot's instant as an aware UTC datetime."""
    return datetime.fromtimestamp(at, UTC)
