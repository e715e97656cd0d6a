"""A reference model of cronie, written from its C code, independent of daycare_cli.

Two parts, each a transcription rather than a design:

- `parse_entry` follows `src/entry.c`: `load_entry` sets `MIN_STAR`, `HR_STAR`,
  `DOM_STAR`, `DOW_STAR` when a field's first character is `*`; `get_list` reads
  comma-separated ranges; `get_range` is the state machine R_START, R_AST, R_STEP,
  R_TERMS, R_NUM1, R_RANGE, R_RANGE_NUM2 (a range `X-0` without a step ends at 7) and
  sets the bits `for (i = low_; i <= high_; i += step)`; Sundays 0 and 7 are made equal.
  On top, the extensions cronsim documents and daycare accepts: `L` and `LW` in the day
  field, `nL` and `n#k` in the weekday field, `N/S` meaning N up to the field's end.
- `run_loop` follows the main loop of `src/cron.c` minute by minute over real instants:
  `clockTime` is the wall-clock minute (real minute + the zone's offset), `virtualTime`
  the minute cron has run jobs for, and the four cases of `timeDiff` (1; small 2-5;
  medium 6-180; negative down to -180; anything else a large jump) decide which of
  `find_jobs(vtime, doWild, doNonWild)` run. A job found runs at the real instant of the
  wakeup. cronie runs its queue between the minutes it catches up on (and sleeps 10 s
  when it started something), so a fixed-time job matching two skipped minutes starts
  twice, seconds apart; here that is one fire, as a slot is one instant.

The only deliberate difference from cronie: the offset is read every minute, where
cronie re-reads it when `tm_isdst` flips (the same for every DST change).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DOWS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class BadEntry(Exception):
    """cronie's `ecode` for a line it cannot read."""


@dataclass
class Entry:
    minute: set[int] = field(default_factory=set)
    hour: set[int] = field(default_factory=set)
    dom: set[int] = field(default_factory=set)
    month: set[int] = field(default_factory=set)
    dow: set[int] = field(default_factory=set)
    min_star: bool = False
    hr_star: bool = False
    dom_star: bool = False
    dow_star: bool = False
    # Extensions beyond cronie.
    dom_last: bool = False
    dom_last_weekday: bool = False
    dow_last: set[int] = field(default_factory=set)
    dow_nth: set[tuple[int, int]] = field(default_factory=set)


def _number(text: str, names: list[str] | None) -> int:
    """`get_number`: a decimal number, else a name (case-insensitive)."""
    if text.isdigit():
        return int(text)
    if names is not None and text.lower() in names:
        return names.index(text.lower())
    raise BadEntry(text)


def _get_range(term: str, low: int, high: int, names: list[str] | None, bits: set[int]) -> None:
    """`get_range` over one comma-separated term (the separator already consumed)."""
    step = 1
    if term.startswith("*"):  # R_START '*' -> R_AST
        low_, high_ = low, high
        rest = term[1:]
        if rest:
            if not rest.startswith("/"):
                raise BadEntry(term)
            step = _number(rest[1:], None)  # R_STEP
            if step == 0:
                raise BadEntry(term)
    else:
        head, slash, step_text = term.partition("/")
        first, dash, second = head.partition("-")
        low_ = _number(first, names)  # R_NUM1
        if dash:  # R_RANGE, R_RANGE_NUM2
            high_ = _number(second, names)
            if not slash and low_ > high_ and high_ == 0:
                high_ = 7
        elif slash:
            high_ = high  # extension: `N/S` runs to the end of the field
        else:
            high_ = low_
        if slash:
            step = _number(step_text, None)
            if step == 0:
                raise BadEntry(term)
    i = low_
    while i <= high_:  # set_element refuses values out of the field's range
        if i < low or i > high:
            raise BadEntry(term)
        bits.add(i)
        i += step


def parse_entry(expr: str) -> Entry:
    """`load_entry` for the five time fields (macros as their 5-field forms)."""
    expr = MACROS.get(expr.strip().lower(), expr)
    fields = expr.split()
    if len(fields) != 5:
        raise BadEntry(expr)
    e = Entry()
    e.min_star = fields[0].startswith("*")
    e.hr_star = fields[1].startswith("*")
    e.dom_star = fields[2].startswith("*")
    e.dow_star = fields[4].startswith("*")
    for term in fields[0].split(","):
        _get_range(term, 0, 59, None, e.minute)
    for term in fields[1].split(","):
        _get_range(term, 0, 23, None, e.hour)
    for term in fields[2].split(","):
        if term.upper() == "L":
            e.dom_last = True
        elif term.upper() == "LW":
            e.dom_last_weekday = True
        else:
            _get_range(term, 1, 31, None, e.dom)
    for term in fields[3].split(","):
        months: set[int] = set()
        _get_range(term, 1, 12, ["", *MONTHS], months)
        e.month |= months
    for term in fields[4].split(","):
        if term[:-1].isdigit() and term[-1] in "lL":
            e.dow_last.add(int(term[:-1]) % 7)
        elif "#" in term:
            day, _, nth = term.partition("#")
            e.dow_nth.add((_number(day, DOWS) % 7, int(nth)))
        else:
            _get_range(term, 0, 7, DOWS, e.dow)
    if 0 in e.dow or 7 in e.dow:  # "make sundays equivalent"
        e.dow |= {0, 7}
    return e


def _matches(e: Entry, tm: time.struct_time) -> bool:
    """The test in `find_jobs`: minute, hour, month, and the odd dom/dow rule."""
    if tm.tm_min not in e.minute or tm.tm_hour not in e.hour or tm.tm_mon not in e.month:
        return False
    year, month, day = tm.tm_year, tm.tm_mon, tm.tm_mday
    dow = (tm.tm_wday + 1) % 7  # C's tm_wday counts from Sunday
    last = calendar.monthrange(year, month)[1]
    dom_ok = day in e.dom
    if e.dom_last and day == last:
        dom_ok = True
    if e.dom_last_weekday:
        last_weekday = last
        while calendar.weekday(year, month, last_weekday) > 4:
            last_weekday -= 1
        dom_ok = dom_ok or day == last_weekday
    dow_ok = dow in e.dow
    if dow in e.dow_last and day + 7 > last:
        dow_ok = True
    if (dow, (day - 1) // 7 + 1) in e.dow_nth:
        dow_ok = True
    return (dow_ok and dom_ok) if (e.dom_star or e.dow_star) else (dow_ok or dom_ok)


def run_loop(e: Entry, zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """The instants (UTC) at which cronie, running from `start`, starts the job, to `end`."""
    wild = e.min_star or e.hr_star

    def clock(minute: int) -> int:
        # set_time(): (StartTime + GMToff) / SECONDS_PER_MINUTE
        offset = datetime.fromtimestamp(minute * 60, zone).utcoffset()
        assert offset is not None
        return minute + int(offset.total_seconds()) // 60

    def find_jobs(vtime: int, do_wild: bool, do_non_wild: bool) -> bool:
        if not _matches(e, time.gmtime(vtime * 60)):
            return False
        return (do_non_wild and not wild) or (do_wild and wild)

    real = int(start.timestamp()) // 60
    last = int(end.timestamp()) // 60
    time_running = virtual_time = clock(real)
    while real < last:
        real += 1
        time_running = clock(real)
        time_diff = time_running - virtual_time
        queued = False
        if time_diff == 1:
            virtual_time = time_running
            queued = find_jobs(virtual_time, True, True)
        elif time_diff > 3 * 60 or time_diff < -(3 * 60):  # large: the clock was set
            virtual_time = time_running
            queued = find_jobs(time_running, True, True)
        elif time_diff > 5:  # medium: DST begins
            queued = find_jobs(time_running, True, False)
            while virtual_time < time_running:
                virtual_time += 1
                queued = find_jobs(virtual_time, False, True) or queued
        elif time_diff > 0:  # small: woke up late
            while virtual_time < time_running:
                virtual_time += 1
                queued = find_jobs(virtual_time, True, True) or queued
        else:  # negative: DST ends; virtual time waits for the clock
            queued = find_jobs(time_running, True, False)
        if queued:
            yield datetime.fromtimestamp(real * 60, UTC)


def fires_between(
    expr: str, zone: ZoneInfo, after: datetime, end: datetime, *, warmup: timedelta
) -> list[datetime]:
    """cronie's fires in (after, end], the loop started `warmup` before `after`."""
    entry = parse_entry(expr)
    return [
        fire
        for fire in run_loop(entry, zone, after - warmup, end)
        if fire.timestamp() > after.timestamp()
    ]


# --- zones ----------------------------------------------------------------------------


def transitions(zone: ZoneInfo, first_year: int, last_year: int) -> list[datetime]:
    """The instants in those years at which the zone's UTC offset changes (probed daily,
    then bisected to the second; offsets change at most once a week since 1970)."""
    begin = datetime(first_year, 1, 1, tzinfo=UTC)
    stop = datetime(last_year + 1, 1, 1, tzinfo=UTC)
    found = []
    day = timedelta(days=1)
    probe = begin
    offset = probe.astimezone(zone).utcoffset()
    while probe < stop:
        nxt = probe + day
        nxt_offset = nxt.astimezone(zone).utcoffset()
        if nxt_offset != offset:
            low, high = int(probe.timestamp()), int(nxt.timestamp())
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, zone).utcoffset() == nxt_offset:
                    high = middle
                else:
                    low = middle
            found.append(datetime.fromtimestamp(high, UTC))
        probe, offset = nxt, nxt_offset
    return found
