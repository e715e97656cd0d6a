"""A 5-field cron expression read the way cronie reads it, into sets of allowed values.

cronie's `src/entry.c` decides what a field means (`get_list`, `get_range`):

- `*` is the whole range, `*/S` every S-th value from its start, `A-B` and `A-B/S` from A
  up to B (so `9-9/2` is {9}: the step never leaves the range).
- Names are the three-letter English ones, in any case (`jan`, `SAT`); weekdays are 0-7,
  0 and 7 both Sunday; a weekday range ending in Sunday's 0 ends at 7 (`SAT-SUN` is 6-7).
- The day is `day of month OR weekday`, unless one of the two fields starts with `*`:
  then both must match (`e->flags & DOM_STAR|DOW_STAR`).
- A job whose minute or hour field starts with `*` is a *wildcard* job
  (`MIN_STAR|HR_STAR`); the clock (core/cronclock.py) treats those differently when DST
  moves the clock.

Beyond cronie, as cronsim and Quartz spell them: `L` (last day of the month) and `LW`
(last weekday) in the day field, `5L` (last Friday) and `1#2` (second Monday) in the
weekday field, and `A/S` meaning `A-<max>/S`. Refused on purpose, each with a hint: what
cronie would read as an empty set (a backwards range such as `FRI-MON`, `6-0/2`), `?`,
`<day>W`, seconds and year fields, and cronie's random `~`.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import bisect
import calendar
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daycare_cli.core.errors import ScheduleError

MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

FIELDS_WORDS = "minute hour day month weekday"
EXAMPLE_CRON = "`0 9 * * 1-5` (09:00 on weekdays)"

# A cron expression that can go longer than this without a slot counts as never firing.
RARE_YEARS = 5


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...]
    hint: str


_MINUTE = _Field("minute", 0, 59, (), "minutes are 0-59, e.g. `0`, `*/15` or `0,30`")
_HOUR = _Field("hour", 0, 23, (), "hours are 0-23, e.g. `9`, `9-17` or `*/2`")
_DAY = _Field(
    "day of month",
    1,
    31,
    (),
    "days of the month are 1-31, `L` (last day) or `LW` (last weekday), e.g. `1,15`",
)
_MONTH = _Field(
    "month", 1, 12, MONTH_NAMES, "months are 1-12 or JAN-DEC, e.g. `1`, `JAN-MAR` or `*/3`"
)
_WEEKDAY = _Field(
    "weekday",
    0,
    7,
    DAY_NAMES,
    "weekdays are 0-7 (0 and 7 are Sunday) or SUN-SAT, e.g. `MON-FRI`, "
    "`5L` (last Friday) or `1#2` (second Monday)",
)
_FIELDS = (_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)

# One comma-separated term: a start (`*`, a number or a name), an optional end, an
# optional step. The special forms (L, LW, nL, n#k) are matched before this.
_TERM_RE = re.compile(
    r"(?P<start>\*|[0-9]+|[A-Za-z]+)(?:-(?P<end>[0-9]+|[A-Za-z]+))?"
    r"(?:/(?P<step>[0-9]+))?"
)


# One object for each distinct set of days or weekdays: specs are many (one per
# expression and zone: ~600 for 10,000 tasks) and their sets few, and a set of 31 days
# takes 2.2 KB (an empty one 216 B).
_SETS: dict[frozenset[Any], frozenset[Any]] = {}
_SETS_MAX = 4096
T = TypeVar("T")


def _shared(values: frozenset[T]) -> frozenset[T]:
    """The one frozenset equal to `values` (bounded: past the bound, `values` itself)."""
    found = _SETS.get(values)
    if found is not None:
        return found
    if len(_SETS) < _SETS_MAX:
        _SETS[values] = values
    return values


@dataclass(frozen=True)
class CronSpec:
    """The allowed values of each field of a 5-field expression, and cronie's flags.

    `weekdays` holds 0-6 (Sunday is 0, whether written 0 or 7). `last_weekdays` holds the
    weekdays of `nL` terms, `nth_weekdays` the (weekday, n) of `wd#n` terms.
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    last_day: bool
    last_weekday_of_month: bool
    months: tuple[int, ...]
    weekdays: frozenset[int]
    last_weekdays: frozenset[int]
    nth_weekdays: frozenset[tuple[int, int]]
    dom_star: bool  # the day-of-month field starts with `*`
    dow_star: bool  # the weekday field starts with `*`
    wildcard: bool  # the minute or the hour field starts with `*` (cronie's MIN_STAR|HR_STAR)
    _month_days: dict[tuple[int, int], tuple[int, ...]] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    @property
    def day_and(self) -> bool:
        """True when a date must match both day fields (one of them starts with `*`)."""
        return self.dom_star or self.dow_star

    def matches_dom(self, year: int, month: int, day: int) -> bool:
        """Whether the day-of-month field allows this date."""
        if day in self.days:
            return True
        last = calendar.monthrange(year, month)[1]
        if self.last_day and day == last:
            return True
        return self.last_weekday_of_month and day == _last_weekday(year, month, last)

    def matches_dow(self, year: int, month: int, day: int) -> bool:
        """Whether the weekday field allows this date."""
        weekday = (calendar.weekday(year, month, day) + 1) % 7  # Sunday is 0
        if weekday in self.weekdays:
            return True
        if weekday in self.last_weekdays and day + 7 > calendar.monthrange(year, month)[1]:
            return True
        return (weekday, (day + 6) // 7) in self.nth_weekdays

    def matches_date(self, year: int, month: int, day: int) -> bool:
        """cronie's day rule: both day fields when one starts with `*`, else either."""
        if month not in self.months:
            return False
        if self.day_and:
            return self.matches_dom(year, month, day) and self.matches_dow(year, month, day)
        return self.matches_dom(year, month, day) or self.matches_dow(year, month, day)

    def month_days(self, year: int, month: int) -> tuple[int, ...]:
        """The days of that month the expression allows, ascending (cached)."""
        key = (year, month)
        days = self._month_days.get(key)
        if days is None:
            if len(self._month_days) > 256:  # a walk over decades stays small
                self._month_days.clear()
            days = self._compute_month_days(year, month)
            self._month_days[key] = days
        return days

    def _compute_month_days(self, year: int, month: int) -> tuple[int, ...]:
        if month not in self.months:
            return ()
        monday_first, last = calendar.monthrange(year, month)
        first = (monday_first + 1) % 7  # the weekday of the 1st, Sunday is 0
        dom = {d for d in self.days if d <= last}
        if self.last_day:
            dom.add(last)
        if self.last_weekday_of_month:
            dom.add(_last_weekday(year, month, last))
        dow: set[int] = set()
        for weekday in self.weekdays:
            dow.update(range(1 + (weekday - first) % 7, last + 1, 7))
        for weekday in self.last_weekdays:
            day = 1 + (weekday - first) % 7
            dow.add(day + 7 * ((last - day) // 7))
        for weekday, nth in self.nth_weekdays:
            day = 1 + (weekday - first) % 7 + 7 * (nth - 1)
            if day <= last:
                dow.add(day)
        return tuple(sorted(dom & dow if self.day_and else dom | dow))

    def next_wall(
        self, year: int, month: int, day: int, hour: int, minute: int, *, max_year: int
    ) -> tuple[int, int, int, int, int] | None:
        """The first wall-clock minute at or after the given one that matches, or None
        when there is none up to the end of `max_year`. No time zone: a calendar walk."""
        months, hours, minutes = self.months, self.hours, self.minutes
        while year <= max_year:
            if month not in months:
                i = bisect.bisect_left(months, month)
                if i == len(months):
                    year, month = year + 1, months[0]
                else:
                    month = months[i]
                day, hour, minute = 1, 0, 0
                continue
            days = self.month_days(year, month)
            i = bisect.bisect_left(days, day)
            if i == len(days):
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
                day, hour, minute = 1, 0, 0
                continue
            if days[i] != day:
                day, hour, minute = days[i], 0, 0
            i = bisect.bisect_left(hours, hour)
            if i == len(hours):
                day, hour, minute = day + 1, 0, 0
                continue
            if hours[i] != hour:
                hour, minute = hours[i], 0
            i = bisect.bisect_left(minutes, minute)
            if i == len(minutes):
                hour, minute = hour + 1, 0
                continue
            return year, month, day, hour, minutes[i]
        return None


def _last_weekday(year: int, month: int, last: int) -> int:
    """The last Monday-to-Friday day of a month."""
    weekday = calendar.weekday(year, month, last)  # Monday is 0
    return last - max(0, weekday - 4)


# --- parsing --------------------------------------------------------------------------


def parse_cron(expr: str) -> CronSpec:
    """Read a 5-field expression (no macros) into a CronSpec.

    Raises ScheduleError with the column of the bad field and a hint.
    """
    tokens = [(m.start() + 1, m.group()) for m in re.finditer(r"\S+", expr)]
    if len(tokens) != 5:
        if len(tokens) > 5:
            col = tokens[5][0]
            hint = f"write 5 fields ({FIELDS_WORDS}) without seconds or years, e.g. {EXAMPLE_CRON}"
        else:
            col = len(expr.rstrip()) + 1
            hint = f"write all 5 fields ({FIELDS_WORDS}), `*` for any, e.g. {EXAMPLE_CRON}"
        raise ScheduleError(
            f"expected 5 fields ({FIELDS_WORDS}), got {len(tokens)}",
            col=col,
            hint=hint,
            excerpt=expr,
        )
    sets = []
    for (col, token), spec in zip(tokens, _FIELDS, strict=True):
        try:
            sets.append(_parse_field(token, spec))
        except _BadField as bad:
            hint = f"{bad.reason}; {spec.hint}" if bad.reason else spec.hint
            raise ScheduleError(
                f"bad {spec.name} `{token}`", col=col, hint=hint, excerpt=expr
            ) from None
    minutes, hours, dom, months, dow = sets
    texts = [token for _, token in tokens]
    weekdays = {v % 7 for v in dow.values}
    return CronSpec(
        text=" ".join(texts),
        minutes=tuple(sorted(minutes.values)),
        hours=tuple(sorted(hours.values)),
        days=_shared(frozenset(dom.values)),
        last_day=dom.last,
        last_weekday_of_month=dom.last_weekday,
        months=tuple(sorted(months.values)),
        weekdays=_shared(frozenset(weekdays)),
        last_weekdays=_shared(frozenset(v % 7 for v in dow.last_of)),
        nth_weekdays=_shared(frozenset((v % 7, n) for v, n in dow.nth)),
        dom_star=texts[2].startswith("*"),
        dow_star=texts[4].startswith("*"),
        wildcard=texts[0].startswith("*") or texts[1].startswith("*"),
    )


class _BadField(Exception):
    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Values:
    values: set[int] = field(default_factory=set)
    last: bool = False  # `L` in the day field
    last_weekday: bool = False  # `LW` in the day field
    last_of: set[int] = field(default_factory=set)  # `5L` in the weekday field
    nth: set[tuple[int, int]] = field(default_factory=set)  # `1#2` in the weekday field


def _parse_field(token: str, spec: _Field) -> _Values:
    out = _Values()
    if token == "?":
        raise _BadField("use `*` for any value (`?` is Quartz syntax)")
    if "~" in token:
        raise _BadField("cronie's random `~` is not supported: pick the values yourself")
    if re.match(r"H(\(|/|,|$)", token.upper()):
        raise _BadField("`H` (a hashed value, as Jenkins and croniter write it) is not supported")
    for term in token.split(","):
        if not term:
            raise _BadField("a comma needs a value on each side")
        _parse_term(term, spec, out)
    return out


_L_HINTS = {
    "day of month": "`L` and `LW` stand alone, not in a range or with a step",
    "weekday": "write `L` after a weekday number: `5L` is the last Friday of the month",
}


def _parse_term(term: str, spec: _Field, out: _Values) -> None:
    upper = term.upper()
    if spec is _DAY and upper in ("L", "LW"):
        if upper == "L":
            out.last = True
        else:
            out.last_weekday = True
        return
    misplaced_l = spec is _DAY or not re.fullmatch(r"[0-9]+L", upper)
    if "L" in upper and spec in (_DAY, _WEEKDAY) and not upper.isalpha() and misplaced_l:
        raise _BadField(_L_HINTS[spec.name])
    if spec is _DAY and upper.endswith("W"):
        raise _BadField("only `LW` (last weekday of the month) is supported, not `<day>W`")
    if spec is _WEEKDAY and re.fullmatch(r"[0-9]+L", upper):
        out.last_of.add(_value(upper[:-1], spec))
        return
    if spec is _WEEKDAY and "#" in upper:
        day, _, nth = upper.partition("#")
        if not day.isalnum():
            raise _BadField("`#` takes one weekday before it, as in `MON#1`")
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise _BadField("`#` takes a week of the month from 1 to 5, as in `1#2`")
        out.nth.add((_value(day, spec), int(nth)))
        return
    match = _TERM_RE.fullmatch(term)
    if match is None:
        raise _BadField("")
    start, end, step_text = match.group("start", "end", "step")
    step = 1
    if step_text is not None:
        step = int(step_text)
        if step == 0:
            raise _BadField("a step is at least 1, as in `*/5`")
    if start == "*":
        if end is not None:
            raise _BadField("`*` is the whole range; write `A-B` for part of it")
        low, high = spec.low, spec.high
    else:
        low = _value(start, spec)
        if end is not None:
            high = _value(end, spec)
        elif step_text is not None:
            high = spec.high  # `5/15`: from 5 to the end, as cronsim and Quartz read it
        else:
            high = low
        if end is not None and low > high:
            if spec is _WEEKDAY and high == 0 and step_text is None:
                high = 7  # cronie: a weekday range ending in Sunday's 0 ends at 7
            else:
                raise _BadField(_backwards_hint(start, end, spec, step_text))
    out.values.update(range(low, high + 1, step))


def _backwards_hint(start: str, end: str, spec: _Field, step: str | None) -> str:
    if spec is _WEEKDAY and end.upper() in ("0", "SUN"):
        return f"write `{start}-7/{step}` for a range that ends on Sunday"
    return f"a range runs upwards (cronie reads `{start}-{end}` as no value at all)"


def _value(text: str, spec: _Field) -> int:
    if text.isdigit():
        value = int(text)
        if spec.low <= value <= spec.high:
            return value
        raise _BadField("")
    upper = text.upper()
    if upper in spec.names:
        return spec.names.index(upper) + spec.low
    if spec.names:
        close = difflib.get_close_matches(upper, spec.names, n=1, cutoff=0.5)
        if close:
            raise _BadField(f"did you mean `{close[0]}` for `{text}`?")
    raise _BadField("")


# --- how often ------------------------------------------------------------------------


def check_fires_often_enough(spec: CronSpec, expr: str, col: int) -> None:
    """Raise unless the expression has a slot at least every RARE_YEARS years.

    Which dates match depends only on the calendar, which repeats every 28 years between
    1901 and 2099, so one 28-year cycle decides. Most expressions match in every month
    they name; that is decided from the fields without walking the calendar.
    """
    # Forms that match in every month: a day up to 28, `L`, `LW`, a plain weekday, a
    # last weekday (`5L`), a first to fourth weekday (`1#4`).
    every_month_dom = any(d <= 28 for d in spec.days) or spec.last_day
    every_month_dom = every_month_dom or spec.last_weekday_of_month
    every_month_dow = bool(spec.weekdays or spec.last_weekdays)
    every_month_dow = every_month_dow or any(n <= 4 for _, n in spec.nth_weekdays)
    fields = spec.text.split()
    if spec.day_and:
        fast = (fields[2] == "*" and every_month_dow) or (fields[4] == "*" and every_month_dom)
    else:
        fast = every_month_dom or every_month_dow
    if fast:
        return
    first, last = 2001, 2028
    years = [year for year in range(first, last + 1) if _year_matches(spec, year)]
    if not years:
        raise _never_fires(expr, spec.text, col)
    cycle = last - first + 1
    gaps = [b - a for a, b in zip(years, [*years[1:], years[0] + cycle], strict=True)]
    if max(gaps) > RARE_YEARS:
        raise _never_fires(expr, spec.text, col, gap=max(gaps) - 1)


def _year_matches(spec: CronSpec, year: int) -> bool:
    return any(spec.month_days(year, month) for month in spec.months)


def _never_fires(expr: str, normalized: str, col: int, gap: int | None = None) -> ScheduleError:
    if gap is None:
        message = f"cron expression `{normalized}` never fires"
    else:
        message = f"cron expression `{normalized}` almost never fires: it can go {gap} years "
        message += "without a slot"
    matches = "no date matches" if gap is None else "too few dates match"
    return ScheduleError(
        message,
        col=col,
        hint=f"{matches} the day, month and weekday fields together; "
        "check them (`L` is the last day of any month)",
        excerpt=expr,
    )


def cronsim_text(spec: CronSpec) -> str:
    """The expression spelled so that cronsim reads the same sets (for its explain()).

    cronsim reads `9-9/2` as 9-23/2 and refuses `SAT-SUN`; those terms are respelled.
    """
    fields = []
    for index, token in enumerate(spec.text.split()):
        terms = []
        for term in token.split(","):
            match = _TERM_RE.fullmatch(term)
            if match and match.group("start") != "*" and match.group("end") is not None:
                spec_field = _FIELDS[index]
                low = _value(match.group("start"), spec_field)
                high = _value(match.group("end"), spec_field)
                if low == high:
                    term = match.group("start")
                elif low > high:  # a weekday range ending in Sunday's 0 (never with a step)
                    term = f"{match.group('start')}-7"
            terms.append(term)
        fields.append(",".join(terms))
    return " ".join(fields)
