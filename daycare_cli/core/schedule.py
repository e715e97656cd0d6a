"""Triggers -> next fires in a time zone, Debian cron DST rules, and explain() (DESIGN.md §4).

Cron expressions are evaluated by cronsim behind this one adapter. cronsim already
follows Debian cron / cronie on DST, which decide per job from its first two fields
(cronie's `MIN_STAR | HR_STAR` flags, set when the field's text starts with `*`):

- A *fixed-time* job (neither minute nor hour starts with `*`, e.g. `30 2 * * *`,
  `0 0-23 * * *`) is matched on the wall clock. A slot in the skipped hour runs once,
  right after the jump (03:00 in Berlin); a slot in the repeated hour runs once, in the
  first pass.
- A *wildcard* job (minute or hour starts with `*`: `0 * * * *`, `*/15 * * * *`,
  `0 */2 * * *`, `*/15 2 * * *`) follows real elapsed time: it never runs in the
  skipped hour and runs in both passes of the repeated hour. So `*/15 2 * * *` has no
  slot on the spring-forward day and eight on the fall-back day (Berlin, Sydney): cronie
  runs wildcard jobs only for minutes that really happen, and skipped minutes are caught
  up for fixed-time jobs alone.

Where cronsim differs from that, this module adapts it:

- Fixed-time jobs are walked on naive wall-clock time, so a start in the second pass of
  a repeated hour (fold=1) yields the first-pass slot again, which lies in the past.
  Every instant is therefore checked with `.timestamp()` to be strictly after "now" and
  after the previous one (aware datetimes of one tzinfo compare ignoring `fold`).
- Several skipped slots of one job (`0,30 2 * * *`) collapse into the one instant after
  the jump. cronie would start the job once per skipped slot at that instant; a slot is
  unique per (task, trigger, instant) here, so it fires once.

Everything here is pure: "now" is an argument, and the only I/O is zoneinfo lookups.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from cronsim.cronsim import SYMBOLIC_DAYS, SYMBOLIC_MONTHS
from cronsim.cronsim import Field as CronField

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger, Trigger

REBOOT = "@reboot"

MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# A trigger firing more often than this gets a warning at create/update time.
FREQUENT_SECONDS = 300

# A cron expression that can go longer than this without a slot counts as never firing.
RARE_YEARS = 5

FIELDS_WORDS = "minute hour day month weekday"
EXAMPLE_CRON = "`0 9 * * 1-5` (09:00 on weekdays)"


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    field: CronField
    names: tuple[str, ...]
    hint: str


_FIELD_SPECS: tuple[_FieldSpec, ...] = (
    _FieldSpec("minute", CronField.MINUTE, (), "minutes are 0-59, e.g. `0`, `*/15` or `0,30`"),
    _FieldSpec("hour", CronField.HOUR, (), "hours are 0-23, e.g. `9`, `9-17` or `*/2`"),
    _FieldSpec(
        "day of month",
        CronField.DAY,
        (),
        "days of the month are 1-31, `L` (last day) or `LW` (last weekday), e.g. `1,15`",
    ),
    _FieldSpec(
        "month",
        CronField.MONTH,
        tuple(SYMBOLIC_MONTHS),
        "months are 1-12 or JAN-DEC, e.g. `1`, `JAN-MAR` or `*/3`",
    ),
    _FieldSpec(
        "weekday",
        CronField.DOW,
        tuple(SYMBOLIC_DAYS),
        "weekdays are 0-7 (0 and 7 are Sunday) or SUN-SAT, e.g. `MON-FRI`, "
        "`5L` (last Friday) or `1#2` (second Monday)",
    ),
)


# --- validation ------------------------------------------------------------------------


def normalize_cron(expr: str) -> str:
    """Validate a cron expression and return its 5-field form (macros expanded, `@reboot` kept).

    Raises ScheduleError (column of the bad field, hint) for bad input and for a
    schedule that never fires (`0 0 31 2 *`).
    """
    return _normalize_cached(expr)


@functools.lru_cache(maxsize=1024)
def _normalize_cached(expr: str) -> str:
    # Cached: the daemon loads thousands of task files that share a few expressions.
    text = expr.strip()
    if not text:
        raise ScheduleError(
            "cron expression is empty", col=1, hint=f"write 5 fields, e.g. {EXAMPLE_CRON}"
        )
    if text.startswith("@"):
        return _expand_macro(expr, text)

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

    for (col, token), spec in zip(tokens, _FIELD_SPECS, strict=True):
        _check_field(expr, col, token, spec)

    normalized = " ".join(token for _, token in tokens)
    day_col = tokens[2][0]
    try:
        sim = CronSim(normalized, datetime(2001, 1, 1))
    except CronSimError:
        # Every field parsed alone, so cronsim only refuses a day no chosen month has.
        raise _never_fires(expr, normalized, day_col) from None
    _check_fires_often_enough(expr, normalized, sim, day_col)
    return normalized


def _expand_macro(expr: str, text: str) -> str:
    key = text.lower()
    if key == REBOOT:
        return REBOOT
    if key in MACROS:
        return MACROS[key]
    known = [REBOOT, *MACROS]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean `{close[0]}`?" if close else "use one of " + ", ".join(known)
    raise ScheduleError(
        f"unknown cron macro `{text}`",
        col=expr.index("@") + 1,
        hint=hint,
        excerpt=expr,
    )


def _check_field(expr: str, col: int, token: str, spec: _FieldSpec) -> None:
    try:
        spec.field.parse(token.upper())
    except (CronSimError, ValueError):
        pass
    else:
        return
    hint = spec.hint
    if token == "?":
        hint = "use `*` for any value (`?` is Quartz syntax); " + hint
    elif spec.field == CronField.DAY and token.upper().endswith("W") and token.upper() != "LW":
        hint = "only `LW` (last weekday of the month) is supported, not `<day>W`; " + hint
    else:
        for word in re.findall(r"[A-Za-z]+", token):
            if spec.names and word.upper() not in spec.names:
                close = difflib.get_close_matches(word.upper(), spec.names, n=1, cutoff=0.5)
                if close:
                    hint = f"did you mean `{close[0]}` for `{word}`? " + hint
                break
    raise ScheduleError(f"bad {spec.name} `{token}`", col=col, hint=hint, excerpt=expr)


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


def _check_fires_often_enough(expr: str, normalized: str, sim: CronSim, col: int) -> None:
    """Raise unless `normalized` has a slot at least every RARE_YEARS years.

    Which dates match depends only on the calendar, which repeats every 28 years between
    1901 and 2099, so one 28-year cycle decides. Most expressions match in every month
    they name; that is checked from the parsed fields without iterating.
    """
    plain_weekdays = all(isinstance(w, int) for w in sim.weekdays)
    day_every_month = any(d <= 28 for d in sim.days)  # L, LW are negative markers
    if sim.day_and:
        fast = (sim.parts[3] == "*" and plain_weekdays) or (sim.parts[5] == "*" and day_every_month)
    else:
        fast = (plain_weekdays and bool(sim.weekdays)) or day_every_month
    if fast:
        return

    first, last = 2001, 2028
    years: list[int] = []
    year = first
    while year <= last:
        try:
            fire = next(CronSim(normalized, datetime(year, 1, 1) - timedelta(seconds=1)))
        except StopIteration:
            break
        if fire.year > last:
            break
        years.append(fire.year)
        year = fire.year + 1
    if not years:
        raise _never_fires(expr, normalized, col)
    cycle = last - first + 1
    gaps = [b - a for a, b in zip(years, [*years[1:], years[0] + cycle], strict=True)]
    if max(gaps) > RARE_YEARS:
        raise _never_fires(expr, normalized, col, gap=max(gaps) - 1)


def check_zone(name: str) -> None:
    """Raise ScheduleError unless `name` is a known IANA zone (with a 'did you mean')."""
    _zone(name)


def _zone(name: str) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # OSError: a directory such as "Europe"; ValueError: a path-like key
    raise ScheduleError(
        f"unknown time zone `{name}`" if name else "time zone is empty",
        col=1,
        hint=_zone_hint(name),
        excerpt=name,
    )


def _zone_hint(name: str) -> str:
    fallback = (
        "use an IANA zone name such as `Europe/Berlin` or `UTC` (`timedatectl list-timezones`)"
    )
    if not name:
        return fallback
    zones = sorted(available_timezones())
    lowered = {z.lower(): z for z in zones}
    wanted = name.strip().replace(" ", "_").lower()
    if wanted in lowered:
        return f"did you mean `{lowered[wanted]}`?"
    regions = [z for z in zones if z.lower().startswith(wanted + "/")]
    if regions:
        return f"`{name}` is a region, not a zone; add a city, e.g. `{regions[0]}`"
    by_city = [z for z in zones if z.lower().rsplit("/", 1)[-1] == wanted]
    if by_city:
        return f"did you mean `{by_city[0]}`?"
    close = difflib.get_close_matches(wanted, list(lowered), n=1, cutoff=0.6)
    if close:
        return f"did you mean `{lowered[close[0]]}`?"
    return fallback


# --- fires -----------------------------------------------------------------------------


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got {value!r}")


def _cron_zone(trigger: CronTrigger, tz: str) -> str:
    return trigger.timezone or tz


def at_instant(trigger: AtTrigger, tz: str) -> datetime:
    """The UTC instant of an `at` trigger; a naive time is read in the trigger's zone or `tz`."""
    at = trigger.at
    if at.tzinfo is None:
        at = at.replace(tzinfo=_zone(trigger.timezone or tz))
    return at.astimezone(UTC)


def _every_step(trigger: EveryTrigger) -> timedelta:
    step = timedelta(seconds=trigger.seconds)
    if step < timedelta(seconds=1):
        raise ScheduleError(
            f"`every` interval must be at least 1s, got {trigger.seconds:g}s",
            hint="write e.g. `every: 15m`",
        )
    return step


def _every_fires(step: timedelta, anchor: datetime, after: datetime) -> Iterator[datetime]:
    """anchor + k*step for k >= 1, strictly after `after`, in UTC."""
    anchor = anchor.astimezone(UTC)
    k = max(1, (after.astimezone(UTC) - anchor) // step + 1)
    while True:
        yield anchor + k * step
        k += 1


def _cron_fires(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """UTC slots of a normalised 5-field `expr` in `zone`, strictly after `after`, ascending."""
    floor = after.timestamp()
    # cronsim stops by itself after 50 years without a slot.
    for local in CronSim(expr, after.astimezone(zone)):
        stamp = local.timestamp()
        if stamp <= floor:
            # A fixed-time job started in the second pass of a repeated hour: cronsim walks
            # the wall clock and offers the first pass again, which is already past.
            continue
        floor = stamp
        yield local.astimezone(UTC)


def _fires(trigger: Trigger, after: datetime, *, tz: str, anchor: datetime) -> Iterator[datetime]:
    """All slots of `trigger` strictly after `after`, ascending, in UTC."""
    if isinstance(trigger, CronTrigger):
        expr = normalize_cron(trigger.expr)
        if expr != REBOOT:
            yield from _cron_fires(expr, _zone(_cron_zone(trigger, tz)), after)
    elif isinstance(trigger, AtTrigger):
        at = at_instant(trigger, tz)
        if at.timestamp() > after.timestamp():
            yield at
    elif isinstance(trigger, EveryTrigger):
        yield from _every_fires(_every_step(trigger), anchor, after)
    # WebhookTrigger: fired by requests, never by the clock.


def next_fires(
    trigger: Trigger,
    after: datetime,
    n: int = 1,
    *,
    tz: str,
    anchor: datetime | None = None,
) -> list[datetime]:
    """The next `n` fire instants of `trigger` strictly after `after`, as aware UTC datetimes.

    Cron triggers use their own zone, else `tz`. `every` fires at anchor + k * interval
    (k >= 1); without an anchor it counts from `after`. `@reboot` and webhooks give [].
    """
    _require_aware(after, "after")
    if anchor is not None:
        _require_aware(anchor, "anchor")
    fires: list[datetime] = []
    if n <= 0:
        return fires
    for fire in _fires(trigger, after, tz=tz, anchor=anchor or after):
        fires.append(fire)
        if len(fires) >= n:
            break
    return fires


def slots_between(
    trigger: Trigger, start: datetime, end: datetime, *, tz: str, limit: int = 100
) -> list[datetime]:
    """Fire instants in the half-open interval (start, end], oldest first, at most `limit`.

    For catch-up after downtime or sleep; an `every` trigger counts from `start`.
    """
    _require_aware(start, "start")
    _require_aware(end, "end")
    slots: list[datetime] = []
    if limit <= 0 or end.timestamp() <= start.timestamp():
        return slots
    last = end.timestamp()
    for fire in _fires(trigger, start, tz=tz, anchor=start):
        if fire.timestamp() > last:
            break
        slots.append(fire)
        if len(slots) >= limit:
            break
    return slots


def latest_slot(trigger: Trigger, start: datetime, end: datetime, *, tz: str) -> datetime | None:
    """The newest fire instant in (start, end], or None (catch-up `latest`).

    Looks back from `end` in growing windows, so a long outage of a frequent cron costs
    about as much as a short one.
    """
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end.timestamp() <= start.timestamp():
        return None
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # window arithmetic in real time
    if isinstance(trigger, EveryTrigger):
        k = (end - start) // _every_step(trigger)
        return start + k * _every_step(trigger) if k >= 1 else None
    windows = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367))
    for window in (*windows, None):
        low = start if window is None or end - window <= start else end - window
        newest: datetime | None = None
        for fire in _fires(trigger, low, tz=tz, anchor=start):
            if fire > end:
                break
            newest = fire
        if newest is not None or window is None:
            return newest
    return None


# --- words -----------------------------------------------------------------------------


def _offset(dt: datetime) -> str:
    """`+01:00` for an aware datetime."""
    offset = dt.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_instant(dt: datetime, tz: str) -> str:
    """ISO 8601 in zone `tz` with its offset, to the second (`2026-03-29T03:00:00+02:00`)."""
    _require_aware(dt, "dt")
    return dt.astimezone(_zone(tz)).isoformat(timespec="seconds")


def _duration_words(seconds: float) -> str:
    """'minute', '15 minutes', '2 hours', '90 seconds' (after the word 'every')."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    if seconds == 1:
        return "second"
    return f"{seconds:g} seconds"


def _duration_spec(seconds: float) -> str:
    """The duration as a task file writes it: `15m`, `2h`, `1d`, `90s`."""
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{suffix}"
    return f"{seconds:g}s"


def explain(trigger: Trigger, *, tz: str) -> str:
    """Words for a trigger, e.g. 'At 09:00 on Monday through Friday (Europe/Berlin)'."""
    if isinstance(trigger, CronTrigger):
        expr = normalize_cron(trigger.expr)
        if expr == REBOOT:
            return "When the daemon starts"
        zone = _cron_zone(trigger, tz)
        _zone(zone)
        try:
            words = CronSim(expr, datetime(2001, 1, 1)).explain()
        except (ValueError, KeyError, IndexError, NotImplementedError):
            # cronsim's explainer does not cover every form its parser accepts.
            words = f"Cron `{expr}`"
        return f"{words} ({zone})"
    if isinstance(trigger, AtTrigger):
        zone = trigger.timezone or tz
        local = at_instant(trigger, tz).astimezone(_zone(zone))
        clock = "%H:%M:%S" if local.second else "%H:%M"
        return f"Once at {local.strftime('%Y-%m-%d ' + clock)} {_offset(local)} ({zone})"
    if isinstance(trigger, EveryTrigger):
        return f"Every {_duration_words(trigger.seconds)}"
    if trigger.signature:
        return f"On webhook ({trigger.signature} signature)"
    return "On webhook"


def describe_trigger_spec(trigger: Trigger) -> str:
    """The trigger as a user writes it: the cron expression, the `at` ISO time, `15m`, `webhook`."""
    if isinstance(trigger, CronTrigger):
        return trigger.source or trigger.expr
    if isinstance(trigger, AtTrigger):
        timespec = "microseconds" if trigger.at.microsecond else "seconds"
        return trigger.at.isoformat(timespec=timespec)
    if isinstance(trigger, EveryTrigger):
        return _duration_spec(trigger.seconds)
    return "webhook"


def frequency_warning(trigger: Trigger, *, tz: str, now: datetime) -> str | None:
    """A warning when the trigger fires more often than every 5 minutes, else None.

    For cron, the smallest gap among the next 20 fires after `now` decides.
    """
    if isinstance(trigger, EveryTrigger):
        if trigger.seconds < FREQUENT_SECONDS:
            return (
                f"This trigger fires every {_duration_words(trigger.seconds)}, more often "
                "than every 5 minutes; make sure that is intended."
            )
        return None
    if not isinstance(trigger, CronTrigger):
        return None
    fires = next_fires(trigger, now, 21, tz=tz)
    gaps = [b.timestamp() - a.timestamp() for a, b in itertools.pairwise(fires)]
    if not gaps or min(gaps) >= FREQUENT_SECONDS:
        return None
    return (
        f"This schedule fires as often as every {_duration_words(min(gaps))}, more often "
        "than every 5 minutes; make sure that is intended."
    )
