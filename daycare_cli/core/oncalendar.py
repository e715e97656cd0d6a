"""Cron expressions <-> systemd calendar events (`OnCalendar=`), both ways, exactly or not at all.

`cron_to_oncalendar` turns a 5-field cron expression into the `OnCalendar=` lines of a
timer that elapse at the same local times. One line is not always enough: when both the
day-of-month and the weekday field are restricted, cron fires on either (cronie's rule)
while systemd requires both, so each side gets a line of its own and the timer elapses on
their union. `L` (last day) is `~01`, `5L` (last Friday) is `Fri *-*~07/1`, `1#2` (second
Monday) is `Mon *-*-08..14`; `LW` (last weekday of the month) has no systemd form.

`oncalendar_to_cron` reads a calendar event back into one cron expression and its zone,
for `daycare import systemd`. It accepts the shorthands (`daily`, `weekly`, …) and the
component forms systemd documents (lists, `a..b` ranges, `/` repetitions, `~` from the
end of the month), and refuses what cron cannot say (seconds, years, a weekday *and* a
day of the month both restricted) with the reason.

DST is not translated: both sides are evaluated on the wall clock of the zone, and where
systemd's handling of a skipped or repeated hour differs from cronie's, `core/dst.py`
says so. Everything here is pure.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.schedule import REBOOT, normalize_cron

WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_LAST = CronSim.LAST  # cronsim's marker for `L` in the day and weekday fields
_LAST_WEEKDAY = CronSim.LAST_WEEKDAY


class NotExpressible(ValueError):
    """A schedule the other side has no exact form for; the message says why."""


# --- cron -> OnCalendar -----------------------------------------------------------------


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _component(values: set[int], lo: int, hi: int) -> str:
    """A systemd calendar component for a set of values of a field ranging lo..hi.

    `*` for all values; `05/15` for an even step running to the end of the field;
    otherwise a list of values and `a..b` ranges.
    """
    ordered = sorted(values)
    if ordered == list(range(lo, hi + 1)):
        return "*"
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if ordered == list(range(ordered[0], hi + 1, step)):
            return f"{ordered[0]:02d}/{step}"
    parts = []
    for a, b in _runs(ordered):
        if b - a >= 2:
            parts.append(f"{a:02d}..{b:02d}")
        else:
            parts.extend(f"{v:02d}" for v in range(a, b + 1))
    return ",".join(parts)


def _weekday_names(days: set[int]) -> str:
    """`Mon..Fri`, `Sat,Sun`: weekday numbers (0 and 7 are Sunday) as systemd names."""
    # systemd's week starts on Monday: Sun is 7 so that `Fri..Sun` stays one range.
    ordered = sorted({7 if d == 0 else d for d in days})
    parts = []
    for a, b in _runs(ordered):
        if b - a >= 2:
            parts.append(f"{WEEKDAYS[a % 7]}..{WEEKDAYS[b % 7]}")
        else:
            parts.extend(WEEKDAYS[v % 7] for v in range(a, b + 1))
    return ",".join(parts)


def _nth_weekday(day: int, nth: int) -> tuple[str, str]:
    """(weekday, day-of-month component) for the nth (or last) such weekday of a month."""
    name = WEEKDAYS[day % 7]
    if nth == _LAST:
        return name, "~07/1"  # the last seven days hold exactly one of each weekday
    first = 7 * (nth - 1) + 1
    return name, f"{first:02d}..{min(first + 6, 31):02d}"


def cron_to_oncalendar(expr: str, zone: str) -> list[str]:
    """The `OnCalendar=` values that elapse exactly when the cron expression fires in `zone`.

    Raises NotExpressible for `@reboot` and for forms systemd cannot say (`LW`; `L` or
    `#` weekdays combined with a restricted day of the month under AND semantics).
    """
    normal = normalize_cron(expr)
    if normal == REBOOT:
        raise NotExpressible("`@reboot` is not a calendar event")
    parts = normal.split()
    sim = CronSim(normal, datetime(2001, 1, 1))
    time = f"{_component(sim.hours, 0, 23)}:{_component(sim.minutes, 0, 59)}:00"
    months = _component(sim.months, 1, 12)
    suffix = f" {zone}" if zone else ""

    if _LAST_WEEKDAY in sim.days:
        raise NotExpressible("`LW` (the last weekday of the month) has no systemd calendar form")
    plain_days = {d for d in sim.days if d > 0}
    days_all = plain_days == set(range(1, 32)) and _LAST not in sim.days
    day_parts = []
    if plain_days:
        day_parts.append(f"{months}-{_component(plain_days, 1, 31)}")
    if _LAST in sim.days:
        day_parts.append(f"{months}~01")

    plain_weekdays = {w for w in sim.weekdays if isinstance(w, int)}
    special = sorted(w for w in sim.weekdays if isinstance(w, tuple))
    weekdays_all = {0 if w == 7 else w for w in plain_weekdays} == set(range(7))

    def line(weekday: str, date: str) -> str:
        return (f"{weekday} " if weekday else "") + f"*-{date} {time}{suffix}"

    # cronie: when either day field starts with `*`, a date must match both; else either.
    day_and = parts[2].startswith("*") or parts[4].startswith("*")
    if day_and:
        if special and not days_all:
            raise NotExpressible(
                f"`{parts[4]}` with the day of the month `{parts[2]}` has no systemd form"
            )
        if special:
            lines = [line(*_nth(w, months)) for w in special]
            if plain_weekdays:
                lines.append(line(_weekday_names(plain_weekdays), f"{months}-*"))
            return lines
        weekday = "" if weekdays_all else _weekday_names(plain_weekdays)
        return [line(weekday, d) for d in day_parts]
    lines = [line("", d) for d in day_parts]
    if plain_weekdays:
        lines.append(line(_weekday_names(plain_weekdays), f"{months}-*"))
    lines.extend(line(*_nth(w, months)) for w in special)
    return lines


def _nth(spec: tuple[int, int], months: str) -> tuple[str, str]:
    name, days = _nth_weekday(*spec)
    sep = "" if days.startswith("~") else "-"
    return name, f"{months}{sep}{days}"


# --- OnCalendar -> cron -----------------------------------------------------------------

SHORTHANDS: dict[str, str] = {
    "minutely": "* * * * *",
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",  # systemd's week starts on Monday
    "monthly": "0 0 1 * *",
    "quarterly": "0 0 1 1,4,7,10 *",
    "semiannually": "0 0 1 1,7 *",
    "yearly": "0 0 1 1 *",
    "annually": "0 0 1 1 *",
}

_DAY_NAMES = {
    name: i
    for i, names in enumerate(
        (
            ("sun", "sunday"),
            ("mon", "monday"),
            ("tue", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
        )
    )
    for name in names
}
_ITEM_RE = re.compile(r"^(?:(\*)|(\d+)(?:\.\.(\d+))?)(?:/(\d+))?$")


def _cron_item(item: str, lo: int, hi: int, what: str) -> str:
    match = _ITEM_RE.match(item)
    if match is None:
        raise NotExpressible(f"cannot read {what} `{item}`")
    star, start, end, step = match.groups()
    if star:
        return f"*/{int(step)}" if step else "*"
    a = int(start)
    b = int(end) if end is not None else None
    for v in (a, b):
        if v is not None and not lo <= v <= hi:
            raise NotExpressible(f"{what} {v} is out of range {lo}-{hi}")
    if step:
        if a == lo and b is None:
            return f"*/{int(step)}"
        return f"{a}-{b if b is not None else hi}/{int(step)}"
    return f"{a}-{b}" if b is not None else str(a)


def _cron_field(component: str, lo: int, hi: int, what: str) -> str:
    if component == "*":
        return "*"
    return ",".join(_cron_item(item, lo, hi, what) for item in component.split(","))


def _cron_weekdays(text: str) -> list[int]:
    days: list[int] = []
    for item in text.lower().split(","):
        bounds = re.split(r"\.\.|-", item)
        try:
            numbers = [_DAY_NAMES[b] for b in bounds]
        except KeyError:
            raise NotExpressible(f"cannot read the weekday `{item}`") from None
        if len(numbers) == 1:
            days.append(numbers[0])
        elif len(numbers) == 2:
            a, b = (7 if n == 0 else n for n in numbers)  # Mon..Sun runs through Sunday
            days.extend(v % 7 for v in range(a, b + 1))
        else:
            raise NotExpressible(f"cannot read the weekday `{item}`")
    return sorted(set(days))


def _cron_days_text(days: list[int]) -> str:
    if sorted(days) == list(range(7)):
        return "*"
    parts = []
    for a, b in _runs(sorted(days)):
        parts.append(f"{a}-{b}" if b - a >= 2 else ",".join(str(v) for v in range(a, b + 1)))
    return ",".join(parts)


def split_zone(tokens: list[str]) -> tuple[list[str], str | None]:
    """The tokens of a calendar event without its trailing zone, and the zone (or None)."""
    if len(tokens) > 1 and not re.search(r"[:*~]|^\d", tokens[-1]):
        try:
            ZoneInfo(tokens[-1])
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        else:
            return tokens[:-1], tokens[-1]
    return tokens, None


def oncalendar_to_cron(spec: str) -> tuple[str, str | None]:
    """One `OnCalendar=` value -> (5-field cron expression, zone or None).

    Raises NotExpressible with the reason for events cron cannot say.
    """
    text = spec.strip()
    tokens, zone = split_zone(text.split())
    if len(tokens) == 1 and tokens[0].lower() in SHORTHANDS:
        return SHORTHANDS[tokens[0].lower()], zone
    weekday = date = clock = None
    for token in tokens:
        if ":" in token:
            clock = token
        elif token[:1].isalpha():
            weekday = token
        elif "-" in token or "~" in token:
            date = token
        else:
            raise NotExpressible(f"cannot read `{token}` in `{text}`")
    minute, hour = _cron_clock(clock or "00:00:00", text)
    dom, month, special = _cron_date(date or "*-*-*", text)
    days = _cron_weekdays(weekday) if weekday else list(range(7))
    if special is not None:
        nth, day_text = special
        if len(days) != 1:
            raise NotExpressible(
                f"`{date}` counts days from the end of the month or by week; with it, name "
                "exactly one weekday (e.g. `Fri *-*~07/1` for the last Friday)"
            )
        dow = f"{days[0]}{day_text}" if nth else day_text
        return _checked(f"{minute} {hour} * {month} {dow}", text), zone
    dow = _cron_days_text(days)
    if dom != "*" and dow != "*":
        raise NotExpressible(
            f"`{text}` needs a weekday and a day of the month at once; cron runs on either, "
            "so it has no cron form"
        )
    return _checked(f"{minute} {hour} {dom} {month} {dow}", text), zone


def _checked(expr: str, text: str) -> str:
    try:
        return normalize_cron(expr)
    except ScheduleError as exc:
        raise NotExpressible(f"`{text}` reads as `{expr}`, which {exc.message}") from None


def _cron_clock(clock: str, text: str) -> tuple[str, str]:
    pieces = clock.split(":")
    if len(pieces) not in (2, 3):
        raise NotExpressible(f"cannot read the time `{clock}` in `{text}`")
    if len(pieces) == 3 and pieces[2] not in ("0", "00"):
        raise NotExpressible(f"`{text}` names seconds; cron has minutes only")
    hour = _cron_field(pieces[0], 0, 23, "hour")
    minute = _cron_field(pieces[1], 0, 59, "minute")
    return minute, hour


_NTH_RANGES = {(1, 7): 1, (8, 14): 2, (15, 21): 3, (22, 28): 4, (29, 31): 5, (29, 35): 5}


def _cron_date(date: str, text: str) -> tuple[str, str, tuple[int, str] | None]:
    """(day of month, month, special) where special is (1, "#n" | "L") or (0, "L")."""
    from_end = "~" in date
    head, _, day = date.rpartition("~" if from_end else "-")
    pieces = head.split("-")
    if len(pieces) == 2:
        year, month = pieces
        if year != "*":
            raise NotExpressible(f"`{text}` names a year; cron repeats every year")
    elif len(pieces) == 1:
        month = pieces[0]
    else:
        raise NotExpressible(f"cannot read the date `{date}` in `{text}`")
    month_field = _cron_field(month, 1, 12, "month")
    if from_end:
        if day in ("01", "1"):
            return "L", month_field, None
        if day in ("07/1", "7/1", "01..07", "1..7"):
            return "*", month_field, (1, "L")
        raise NotExpressible(f"`~{day}` (counted from the month's end) has no cron form")
    match = re.fullmatch(r"(\d+)\.\.(\d+)", day)
    if match and (int(match[1]), int(match[2])) in _NTH_RANGES:
        nth = _NTH_RANGES[(int(match[1]), int(match[2]))]
        return "*", month_field, (1, f"#{nth}")
    return _cron_field(day, 1, 31, "day"), month_field, None
