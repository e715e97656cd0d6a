"""Triggers -> next fires in a time zone, cronie's rules, DST notes and explain()
(docs/task-file.md, "schedule").

Cron expressions are read by core/cronspec.py (cronie's field rules) and placed in time
by core/cronclock.py (cronie's main loop, DST included); cronsim only puts an expression
into words. In short, for a day when the clock changes:

- A *fixed-time* job (neither minute nor hour starts with `*`, e.g. `30 2 * * *`,
  `0 0-23 * * *`) runs once for a wall time the clock jumps over, at the jump (03:00 in
  Berlin), and once for a wall time that happens twice, the first time.
- A *wildcard* job (minute or hour starts with `*`: `0 * * * *`, `*/15 2 * * *`) follows
  real time: it never runs in the skipped hour and runs in both passes of the repeated one.

Every instant is compared with `.timestamp()` (aware datetimes of one tzinfo compare
ignoring `fold`). Several skipped slots of one job (`0,30 2 * * *`) are one fire at the
jump: a slot is unique per (task, trigger, instant).

Everything here is pure: "now" is an argument, and the only I/O is zoneinfo lookups.
"""

from __future__ import annotations

import difflib
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from daycare_cli.core.cronclock import Slot, cron_slots
from daycare_cli.core.cronspec import (
    EXAMPLE_CRON,
    CronSpec,
    check_fires_often_enough,
    cronsim_text,
    parse_cron,
)
from daycare_cli.core.dstnote import at_note, slot_note
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
    spec = parse_cron(expr)
    check_fires_often_enough(spec, expr, _field_col(expr, 2))
    return spec.text


def _field_col(expr: str, index: int) -> int:
    """The 1-based column where field `index` of `expr` starts."""
    col, seen, inside = 0, -1, False
    for col, char in enumerate(expr, start=1):
        if char.isspace():
            inside = False
        elif not inside:
            inside, seen = True, seen + 1
            if seen == index:
                return col
    return col


@functools.lru_cache(maxsize=1024)
def cron_spec(expr: str) -> CronSpec:
    """The parsed form of a normalised 5-field expression (cached)."""
    return parse_cron(expr)


def _expand_macro(expr: str, text: str) -> str:
    key = text.lower()
    if key == REBOOT:
        return REBOOT
    if key in MACROS:
        return MACROS[key]
    known = [REBOOT, *MACROS]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean `{close[0]}`?" if close else "use one of " + ", ".join(known)
    if key.startswith("@every"):
        hint = "for a fixed interval use an `every` trigger, e.g. `- every: 5m`"
    raise ScheduleError(
        f"unknown cron macro `{text.split()[0]}`",
        col=expr.index("@") + 1,
        hint=hint,
        excerpt=expr,
    )


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


# `at` times a task file may hold: any later and adding a retry delay or a catch-up
# window could pass the end of Python's calendar (year 9999).
AT_YEARS = (1970, 8999)


def check_at(at: datetime) -> None:
    """Raise ScheduleError unless an `at` time is in the years AT_YEARS allows."""
    first, last = AT_YEARS
    if not first <= at.year <= last:
        raise ScheduleError(
            f"`at` must be a time between the years {first} and {last}, not in {at.year}",
            hint='at: "2026-11-22T09:00:00"',
        )


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


def _cron_slots(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[Slot]:
    """Slots of a normalised 5-field `expr` in `zone`, strictly after `after`, ascending."""
    return cron_slots(cron_spec(expr), zone, after.timestamp())


def _cron_fires(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """UTC slots of a normalised 5-field `expr` in `zone`, strictly after `after`, ascending."""
    for slot in _cron_slots(expr, zone, after):
        yield datetime.fromtimestamp(slot.at, UTC)


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


@dataclass(frozen=True)
class NotedFire:
    """A fire and, when a clock change moved or repeated it, what happened in words."""

    at: datetime  # aware, UTC
    dst: str | None = None


def next_fires_noted(
    trigger: Trigger,
    after: datetime,
    n: int = 1,
    *,
    tz: str,
    anchor: datetime | None = None,
) -> list[NotedFire]:
    """next_fires() with a DST note on each fire a clock change moved or repeated
    ("02:30 does not exist on 2026-03-29: runs at 03:00 +02:00")."""
    _require_aware(after, "after")
    if n <= 0:
        return []
    if isinstance(trigger, CronTrigger) and normalize_cron(trigger.expr) != REBOOT:
        zone = _zone(_cron_zone(trigger, tz))
        slots = _cron_slots(normalize_cron(trigger.expr), zone, after)
        return [
            NotedFire(datetime.fromtimestamp(slot.at, UTC), slot_note(slot, zone))
            for slot in itertools.islice(slots, n)
        ]
    fires = next_fires(trigger, after, n, tz=tz, anchor=anchor)
    if isinstance(trigger, AtTrigger) and fires:
        at = trigger.at
        if at.tzinfo is None or isinstance(at.tzinfo, ZoneInfo):
            zone = at.tzinfo if isinstance(at.tzinfo, ZoneInfo) else _zone(trigger.timezone or tz)
            return [NotedFire(fires[0], at_note(at.replace(tzinfo=None), zone))]
    return [NotedFire(fire) for fire in fires]


def upcoming(
    trigger: Trigger, *, now: datetime, last_slot: datetime | None, tz: str, n: int = 1
) -> list[NotedFire]:
    """The next `n` fires of a trigger from its stored state: one answer for every view.

    `last_slot` is the trigger's state (store/state.py): its last slot, or for a trigger
    that never fired the instant it was first planned; None when nothing is stored.
    An `every` trigger counts from it (else from `now`); an `at` trigger whose slot is
    recorded has fired; cron fires depend on `now` alone.
    """
    _require_aware(now, "now")
    if last_slot is not None:
        _require_aware(last_slot, "last_slot")
    fired = (
        isinstance(trigger, AtTrigger)
        and last_slot is not None
        and last_slot.timestamp() >= at_instant(trigger, tz).timestamp()
    )
    if fired:
        return []
    anchor = last_slot if isinstance(trigger, EveryTrigger) else None
    return next_fires_noted(trigger, now, n, tz=tz, anchor=anchor)


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
        from cronsim import CronSim, CronSimError  # only for the words

        try:
            words = CronSim(cronsim_text(cron_spec(expr)), datetime(2001, 1, 1)).explain()
        except (CronSimError, ValueError, KeyError, IndexError, NotImplementedError):
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
