"""Tests for core/schedule.py: cron (cronie's rules, DST), at, every, webhook, explain."""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.schedule import (
    check_zone,
    describe_trigger_spec,
    explain,
    format_instant,
    frequency_warning,
    latest_slot,
    next_fires,
    normalize_cron,
    slots_between,
)
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger, Trigger, WebhookTrigger

BER = "Europe/Berlin"
NYC = "America/New_York"
SYD = "Australia/Sydney"


def utc(text: str) -> datetime:
    """`2026-11-20T12:00` read as UTC; a bare time such as `10:30` is on 2026-11-24."""
    if "-" not in text:
        text = f"2026-11-24T{text}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str) -> datetime:
    """`2026-10-25 02:10+01` (wall time with its UTC offset in hours) as an aware datetime."""
    return datetime.fromisoformat(text + ":00")


def local_fires(after: datetime, fires: str) -> list[datetime]:
    """Parse `02:45+02, 26 02:00+01`: a time on `after`'s date, or `DAY time` on another day."""
    result = []
    for item in fires.split(", "):
        day, _, clock = item.rpartition(" ")
        date = after.date().replace(day=int(day)) if day else after.date()
        result.append(datetime.fromisoformat(f"{date}T{clock}:00"))
    return result


def stamps(values: list[datetime]) -> list[float]:
    return [v.timestamp() for v in values]


# --- DST: Debian cron / cronie rules ----------------------------------------------------

# (zone, after as local wall time with offset, expression, the next fires after it).
# Berlin: 2026-03-29 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET.
# New York: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST.
# Sydney: 2026-04-05 03:00 AEDT -> 02:00 AEST, 2026-10-04 02:00 AEST -> 03:00 AEDT.
DST_CASES = [
    # Berlin, spring forward: fixed times in 02:xx run once at 03:00; wildcards skip 02:xx.
    (BER, "2026-03-29 00:30+01", "30 2 * * *", "03:00+02, 30 02:30+02"),
    (BER, "2026-03-29 00:30+01", "0 2 * * *", "03:00+02, 30 02:00+02"),
    (BER, "2026-03-29 00:30+01", "0 * * * *", "01:00+01, 03:00+02, 04:00+02"),
    (BER, "2026-03-29 01:40+01", "*/15 * * * *", "01:45+01, 03:00+02, 03:15+02, 03:30+02"),
    (BER, "2026-03-29 00:30+01", "0 3 * * *", "03:00+02, 30 03:00+02"),
    (BER, "2026-03-29 00:30+01", "*/15 2 * * *", "30 02:00+02, 30 02:15+02"),
    (BER, "2026-03-29 00:30+01", "0 */2 * * *", "04:00+02, 06:00+02"),
    (BER, "2026-03-29 01:59+01", "0 2 * * *", "03:00+02, 30 02:00+02"),
    (BER, "2026-03-29 03:00+02", "30 2 * * *", "30 02:30+02"),
    (BER, "2026-03-29 00:30+01", "0,30 2 * * *", "03:00+02, 30 02:00+02"),
    (BER, "2026-03-29 00:30+01", "0 0-23 * * *", "01:00+01, 03:00+02, 04:00+02"),
    # Berlin, fall back: fixed times in 02:xx run in the first pass only; wildcards twice.
    (BER, "2026-10-25 00:30+02", "30 2 * * *", "02:30+02, 26 02:30+01"),
    (BER, "2026-10-25 00:30+02", "0 2 * * *", "02:00+02, 26 02:00+01"),
    (BER, "2026-10-25 00:30+02", "0 * * * *", "01:00+02, 02:00+02, 02:00+01, 03:00+01"),
    (BER, "2026-10-25 02:40+02", "*/15 * * * *", "02:45+02, 02:00+01, 02:15+01, 02:30+01"),
    (BER, "2026-10-25 00:30+02", "0 3 * * *", "03:00+01, 26 03:00+01"),
    (BER, "2026-10-25 00:30+02", "*/15 2 * * *", "02:00+02, 02:15+02, 02:30+02, 02:45+02"),
    (BER, "2026-10-25 02:40+02", "*/15 2 * * *", "02:45+02, 02:00+01, 02:15+01, 02:30+01"),
    (BER, "2026-10-25 00:30+02", "0 */2 * * *", "02:00+02, 02:00+01, 04:00+01"),
    (BER, "2026-10-25 00:30+02", "0 0-23 * * *", "01:00+02, 02:00+02, 03:00+01"),
    # "now" in the second pass: the first-pass slot is past, never offered again.
    (BER, "2026-10-25 02:10+01", "30 2 * * *", "26 02:30+01"),
    (BER, "2026-10-25 02:10+01", "0 2 * * *", "26 02:00+01"),
    (BER, "2026-10-25 02:10+01", "0 * * * *", "03:00+01, 04:00+01"),
    (BER, "2026-10-25 02:10+01", "*/15 2 * * *", "02:15+01, 02:30+01, 02:45+01, 26 02:00+01"),
    (BER, "2026-10-25 02:00+01", "0 2 * * *", "26 02:00+01"),
    # New York, spring forward.
    (NYC, "2026-03-08 00:30-05", "30 2 * * *", "03:00-04, 9 02:30-04"),
    (NYC, "2026-03-08 00:30-05", "0 2 * * *", "03:00-04, 9 02:00-04"),
    (NYC, "2026-03-08 00:30-05", "0 * * * *", "01:00-05, 03:00-04, 04:00-04"),
    (NYC, "2026-03-08 01:40-05", "*/15 * * * *", "01:45-05, 03:00-04, 03:15-04, 03:30-04"),
    (NYC, "2026-03-08 00:30-05", "0 3 * * *", "03:00-04, 9 03:00-04"),
    (NYC, "2026-03-08 00:30-05", "*/15 2 * * *", "9 02:00-04, 9 02:15-04"),
    (NYC, "2026-03-08 00:30-05", "0 */2 * * *", "04:00-04, 06:00-04"),
    # New York, fall back: the repeated hour is 01:xx, so 02:xx jobs are ordinary.
    (NYC, "2026-11-01 00:30-04", "30 2 * * *", "02:30-05, 2 02:30-05"),
    (NYC, "2026-11-01 00:30-04", "0 2 * * *", "02:00-05, 2 02:00-05"),
    (NYC, "2026-11-01 00:30-04", "0 * * * *", "01:00-04, 01:00-05, 02:00-05, 03:00-05"),
    (NYC, "2026-11-01 01:40-04", "*/15 * * * *", "01:45-04, 01:00-05, 01:15-05, 01:30-05"),
    (NYC, "2026-11-01 00:30-04", "0 3 * * *", "03:00-05, 2 03:00-05"),
    (NYC, "2026-11-01 00:30-04", "*/15 2 * * *", "02:00-05, 02:15-05, 02:30-05, 02:45-05"),
    (NYC, "2026-11-01 00:30-04", "0 */2 * * *", "02:00-05, 04:00-05"),
    (NYC, "2026-11-01 00:30-04", "30 1 * * *", "01:30-04, 2 01:30-05"),
    (NYC, "2026-11-01 01:10-05", "30 1 * * *", "2 01:30-05"),
    # Sydney, fall back (April).
    (SYD, "2026-04-05 00:30+11", "30 2 * * *", "02:30+11, 6 02:30+10"),
    (SYD, "2026-04-05 00:30+11", "0 2 * * *", "02:00+11, 6 02:00+10"),
    (SYD, "2026-04-05 00:30+11", "0 * * * *", "01:00+11, 02:00+11, 02:00+10, 03:00+10"),
    (SYD, "2026-04-05 02:40+11", "*/15 * * * *", "02:45+11, 02:00+10, 02:15+10, 02:30+10"),
    (SYD, "2026-04-05 00:30+11", "0 3 * * *", "03:00+10, 6 03:00+10"),
    (SYD, "2026-04-05 00:30+11", "*/15 2 * * *", "02:00+11, 02:15+11, 02:30+11, 02:45+11"),
    (SYD, "2026-04-05 02:40+11", "*/15 2 * * *", "02:45+11, 02:00+10, 02:15+10, 02:30+10"),
    (SYD, "2026-04-05 00:30+11", "0 */2 * * *", "02:00+11, 02:00+10, 04:00+10"),
    (SYD, "2026-04-05 02:10+10", "30 2 * * *", "6 02:30+10"),
    # Sydney, spring forward (October).
    (SYD, "2026-10-04 00:30+10", "30 2 * * *", "03:00+11, 5 02:30+11"),
    (SYD, "2026-10-04 00:30+10", "0 2 * * *", "03:00+11, 5 02:00+11"),
    (SYD, "2026-10-04 00:30+10", "0 * * * *", "01:00+10, 03:00+11, 04:00+11"),
    (SYD, "2026-10-04 01:40+10", "*/15 * * * *", "01:45+10, 03:00+11, 03:15+11, 03:30+11"),
    (SYD, "2026-10-04 00:30+10", "0 3 * * *", "03:00+11, 5 03:00+11"),
    (SYD, "2026-10-04 00:30+10", "*/15 2 * * *", "5 02:00+11, 5 02:15+11"),
    (SYD, "2026-10-04 00:30+10", "0 */2 * * *", "04:00+11, 06:00+11"),
]


@pytest.mark.parametrize(("zone", "after", "expr", "fires"), DST_CASES)
def test_dst_fires(zone: str, after: str, expr: str, fires: str) -> None:
    start = local(after)
    expected = local_fires(start, fires)
    got = next_fires(CronTrigger(expr), start, len(expected), tz=zone)
    assert stamps(got) == stamps(expected)
    assert all(g.tzinfo is UTC for g in got)


TRANSITION_DAYS = [
    (BER, "2026-03-29", 23),
    (BER, "2026-10-25", 25),
    (NYC, "2026-03-08", 23),
    (NYC, "2026-11-01", 25),
    (SYD, "2026-04-05", 25),
    (SYD, "2026-10-04", 23),
]
DST_EXPRESSIONS = [
    "30 2 * * *",
    "0 2 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "0 3 * * *",
    "*/15 2 * * *",
    "0 */2 * * *",
]


def day_bounds(zone: str, day: str) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    first = datetime.fromisoformat(day).replace(tzinfo=tz)
    return first, first.replace(day=first.day + 1)


@pytest.mark.parametrize(("zone", "day", "hours"), TRANSITION_DAYS)
@pytest.mark.parametrize("expr", DST_EXPRESSIONS)
def test_every_minute_of_transition_day(zone: str, day: str, hours: int, expr: str) -> None:
    """next_fires(after=t) is the first fire strictly after t, for every real minute t."""
    first, last = day_bounds(zone, day)
    trigger = CronTrigger(expr)
    # Every slot of the day and the next, computed once by walking forward.
    walk = slots_between(
        trigger, first - timedelta(minutes=1), last + timedelta(days=1), tz=zone, limit=1000
    )
    walk_stamps = stamps(walk)
    assert len(set(walk_stamps)) == len(walk), "an instant came twice"
    assert walk_stamps == sorted(walk_stamps)

    begin, end = first.astimezone(UTC), last.astimezone(UTC)
    assert (end - begin) == timedelta(hours=hours)
    second_pass = 0
    for minute in range(hours * 60):
        # Real minutes; in the repeated hour astimezone() sets fold=1 for the second pass.
        # Seconds vary (0, 20, 40) so "now" is on a slot, and between slots.
        instant = begin + timedelta(minutes=minute, seconds=minute % 3 * 20)
        now = instant.astimezone(ZoneInfo(zone))
        second_pass += now.fold
        (fire,) = next_fires(trigger, now, tz=zone)
        assert fire.timestamp() > now.timestamp(), (now, fire)
        assert fire == walk[bisect.bisect_right(walk_stamps, now.timestamp())], now
    assert second_pass == (60 if hours == 25 else 0)


@pytest.mark.parametrize(("zone", "day", "hours"), TRANSITION_DAYS)
def test_fold_one_wall_times_are_strict(zone: str, day: str, hours: int) -> None:
    """Wall times built with fold=1 (second pass) get fires strictly after them."""
    first, _ = day_bounds(zone, day)
    for expr, hour, minute in itertools.product(DST_EXPRESSIONS, (1, 2, 3), range(0, 60, 5)):
        now = first.replace(hour=hour, minute=minute, fold=1)
        (fire,) = next_fires(CronTrigger(expr), now, tz=zone)
        assert fire.timestamp() > now.timestamp(), (expr, now, fire)


@pytest.mark.parametrize(("zone", "day", "hours"), TRANSITION_DAYS)
def test_fixed_jobs_once_and_wildcards_follow_real_time(zone: str, day: str, hours: int) -> None:
    first, last = day_bounds(zone, day)
    start, end = first - timedelta(seconds=1), last - timedelta(seconds=1)

    def count(expr: str) -> int:
        return len(slots_between(CronTrigger(expr), start, end, tz=zone, limit=1000))

    # Fixed-time jobs run exactly once on a transition day, skipped or repeated hour alike.
    assert count("30 2 * * *") == count("0 2 * * *") == count("0 3 * * *") == 1
    # Wildcard jobs fire once per real hour / quarter-hour that the day has.
    assert count("0 * * * *") == hours
    assert count("*/15 * * * *") == hours * 4
    quarter = slots_between(CronTrigger("*/15 * * * *"), start, end, tz=zone, limit=1000)
    assert {b.timestamp() - a.timestamp() for a, b in itertools.pairwise(quarter)} == {900}


# --- cron on ordinary days ------------------------------------------------------------

CRON_CASES = [
    ("0 9 * * MON-FRI", "2026-11-20T12:00", "2026-11-23T09:00 2026-11-24T09:00"),
    ("0 9 * * mon-fri", "2026-11-20T12:00", "2026-11-23T09:00 2026-11-24T09:00"),
    ("0 0 1 JAN *", "2026-06-01T00:00", "2027-01-01T00:00 2028-01-01T00:00"),
    ("0 12 1,15 * *", "2026-11-10T00:00", "2026-11-15T12:00 2026-12-01T12:00"),
    ("0 9-11 * * *", "2026-11-10T10:30", "2026-11-10T11:00 2026-11-11T09:00"),
    ("*/20 9 * * *", "2026-11-10T09:30", "2026-11-10T09:40 2026-11-11T09:00"),
    ("0 9 * JAN-MAR/2 *", "2026-01-31T12:00", "2026-03-01T09:00 2026-03-02T09:00"),
    ("0 0 */10 * *", "2026-11-25T00:00", "2026-12-01T00:00 2026-12-11T00:00"),
    ("0 0 L * *", "2026-02-10T00:00", "2026-02-28T00:00 2026-03-31T00:00"),
    ("0 0 L 2 *", "2026-03-01T00:00", "2027-02-28T00:00 2028-02-29T00:00"),
    ("0 0 LW * *", "2026-05-01T00:00", "2026-05-29T00:00 2026-06-30T00:00"),
    ("0 0 * * 5L", "2026-11-01T00:00", "2026-11-27T00:00 2026-12-25T00:00"),
    ("0 0 * * 1#2", "2026-11-01T00:00", "2026-11-09T00:00 2026-12-14T00:00"),
    ("0 0 * * MON#2", "2026-11-01T00:00", "2026-11-09T00:00 2026-12-14T00:00"),
    ("0 0 * * 7", "2026-11-01T00:00", "2026-11-08T00:00 2026-11-15T00:00"),
    ("0 0 * * sun,sat", "2026-11-18T00:00", "2026-11-21T00:00 2026-11-22T00:00"),
    ("0 0 1 * MON", "2026-11-25T00:00", "2026-11-30T00:00 2026-12-01T00:00"),
    ("0 0 29 2 *", "2026-01-01T00:00", "2028-02-29T00:00 2032-02-29T00:00"),
    ("@hourly", "2026-11-10T10:30", "2026-11-10T11:00 2026-11-10T12:00"),
    ("@daily", "2026-11-10T10:30", "2026-11-11T00:00 2026-11-12T00:00"),
    ("@weekly", "2026-11-10T10:30", "2026-11-15T00:00 2026-11-22T00:00"),
    ("@monthly", "2026-11-10T10:30", "2026-12-01T00:00 2027-01-01T00:00"),
    ("@yearly", "2026-11-10T10:30", "2027-01-01T00:00 2028-01-01T00:00"),
    ("0 9 * * *", "2026-11-10T09:00", "2026-11-11T09:00 2026-11-12T09:00"),
    ("0 9 * * *", "2026-11-10T08:59:59.5", "2026-11-10T09:00 2026-11-11T09:00"),
]


@pytest.mark.parametrize(("expr", "after", "fires"), CRON_CASES)
def test_cron_fires(expr: str, after: str, fires: str) -> None:
    trigger = CronTrigger(normalize_cron(expr), source=expr)
    got = next_fires(trigger, utc(after), 2, tz="UTC")
    assert got == [utc(f) for f in fires.split()]


def test_cron_zone_from_trigger_beats_task_zone() -> None:
    trigger = CronTrigger("0 9 * * *", timezone=NYC)
    assert next_fires(trigger, utc("2026-11-10T00:00"), tz=BER) == [utc("2026-11-10T14:00")]
    trigger = CronTrigger("0 9 * * *")
    assert next_fires(trigger, utc("2026-11-10T00:00"), tz=BER) == [utc("2026-11-10T08:00")]


NORMALIZE_CASES = [
    ("*/15 * * * *", "*/15 * * * *"),
    ("  0   9 * *  1-5 ", "0 9 * * 1-5"),
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@Daily", "0 0 * * *"),
    ("@reboot", "@reboot"),
    ("0 0 LW * *", "0 0 LW * *"),
    ("0 0 * * 5L", "0 0 * * 5L"),
    ("0 0 * * FRI#3", "0 0 * * FRI#3"),
    ("0 0 29 2 *", "0 0 29 2 *"),
    ("0 0 31 4,6 MON", "0 0 31 4,6 MON"),
]


@pytest.mark.parametrize(("expr", "normal"), NORMALIZE_CASES)
def test_normalize_cron(expr: str, normal: str) -> None:
    assert normalize_cron(expr) == normal


# (expression, column of the bad field, part of the message, part of the hint)
CRON_ERRORS = [
    ("0 0 * * * *", 11, "expected 5 fields (minute hour day month weekday), got 6", "seconds"),
    ("0 9", 4, "expected 5 fields (minute hour day month weekday), got 2", "all 5 fields"),
    ("", 1, "cron expression is empty", "5 fields"),
    ("61 * * * *", 1, "bad minute `61`", "0-59"),
    ("0 24 * * *", 3, "bad hour `24`", "0-23"),
    ("0 0 32 * *", 5, "bad day of month `32`", "1-31"),
    ("0 0 * 13 *", 7, "bad month `13`", "1-12"),
    ("0 0 * JAM *", 7, "bad month `JAM`", "did you mean `JAN`"),
    ("0 0 * * MON-FRY", 9, "bad weekday `MON-FRY`", "did you mean `FRI`"),
    ("0 0 * * 8", 9, "bad weekday `8`", "0-7"),
    ("0 0 * * FRI-MON", 9, "bad weekday `FRI-MON`", "SUN-SAT"),
    ("*/0 * * * *", 1, "bad minute `*/0`", "0-59"),
    ("0 ? * * *", 3, "bad hour `?`", "use `*`"),
    ("0 0 15W * *", 5, "bad day of month `15W`", "only `LW`"),
    ("0 0 * * 6#6", 9, "bad weekday `6#6`", "1#2"),
    ("@dayly", 1, "unknown cron macro `@dayly`", "did you mean `@daily`"),
    ("0 0 31 2 *", 5, "`0 0 31 2 *` never fires", "day, month and weekday"),
    ("0 0 30 2 *", 5, "`0 0 30 2 *` never fires", "day, month and weekday"),
    ("0 0 31 4,6,9,11 *", 5, "never fires", "day, month and weekday"),
    ("0 0 * 2 MON#5", 5, "almost never fires: it can go 27 years", "too few dates"),
    ("0 0 */31 1 MON", 5, "almost never fires: it can go 10 years", "too few dates"),
]


@pytest.mark.parametrize(("expr", "col", "message", "hint"), CRON_ERRORS)
def test_normalize_cron_errors(expr: str, col: int, message: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        normalize_cron(expr)
    assert caught.value.col == col
    assert message in caught.value.message
    assert caught.value.hint is not None and hint in caught.value.hint
    assert "\n" not in caught.value.message


# --- zones ------------------------------------------------------------------------------

ZONE_ERRORS = [
    ("Europe/Berln", "unknown time zone `Europe/Berln`", "did you mean `Europe/Berlin`?"),
    ("europe/berlin", "unknown time zone `europe/berlin`", "did you mean `Europe/Berlin`?"),
    ("Berlin", "unknown time zone `Berlin`", "did you mean `Europe/Berlin`?"),
    ("America/New_Yrok", "unknown time zone", "did you mean `America/New_York`?"),
    ("Europe", "unknown time zone `Europe`", "is a region"),
    ("Mars/Olympus_Mons", "unknown time zone", "IANA zone"),
    ("../etc/passwd", "unknown time zone", "IANA zone"),
    ("", "time zone is empty", "IANA zone"),
]


@pytest.mark.parametrize(("name", "message", "hint"), ZONE_ERRORS)
def test_check_zone_errors(name: str, message: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        check_zone(name)
    assert message in caught.value.message
    assert caught.value.hint is not None and hint in caught.value.hint


@pytest.mark.parametrize("name", ["Europe/Berlin", "UTC", "America/New_York", "Asia/Kolkata"])
def test_check_zone_accepts(name: str) -> None:
    check_zone(name)


def test_unknown_zone_in_next_fires_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="Europe/Berln"):
        next_fires(CronTrigger("0 9 * * *"), utc("2026-01-01T00:00"), tz="Europe/Berln")


# --- at, every, webhook, @reboot -----------------------------------------------------

AT = AtTrigger(datetime(2026, 11, 24, 12, 0, tzinfo=ZoneInfo(BER)))
EVERY_15M = EveryTrigger(900)

# (trigger, after, anchor, expected fires in UTC)
OTHER_CASES: list[tuple[Trigger, str, str | None, str]] = [
    (AT, "2026-11-24T10:59", None, "2026-11-24T11:00"),
    (AT, "2026-11-24T11:00", None, ""),
    (AT, "2026-12-01T00:00", None, ""),
    (EVERY_15M, "2026-11-24T10:00", None, "2026-11-24T10:15 2026-11-24T10:30"),
    (EVERY_15M, "2026-11-24T10:20", "2026-11-24T10:00", "2026-11-24T10:30 2026-11-24T10:45"),
    (EVERY_15M, "2026-11-24T10:30", "2026-11-24T10:00", "2026-11-24T10:45 2026-11-24T11:00"),
    (EVERY_15M, "2026-11-24T09:00", "2026-11-24T10:00", "2026-11-24T10:15 2026-11-24T10:30"),
    (EveryTrigger(1), "2026-11-24T10:00", None, "2026-11-24T10:00:01 2026-11-24T10:00:02"),
    (WebhookTrigger(), "2026-11-24T10:00", None, ""),
    (CronTrigger("@reboot"), "2026-11-24T10:00", None, ""),
]


@pytest.mark.parametrize(("trigger", "after", "anchor", "fires"), OTHER_CASES)
def test_other_trigger_fires(trigger: Trigger, after: str, anchor: str | None, fires: str) -> None:
    start = utc(after)
    got = next_fires(trigger, start, 2, tz=BER, anchor=utc(anchor) if anchor else None)
    assert got == [utc(f) for f in fires.split()]


def test_every_below_one_second_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="at least 1s"):
        next_fires(EveryTrigger(0.5), utc("2026-01-01T00:00"), tz="UTC")


def test_naive_after_is_a_bug() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_fires(CronTrigger("* * * * *"), datetime(2026, 1, 1), tz="UTC")


def test_no_fires_asked() -> None:
    assert next_fires(CronTrigger("* * * * *"), utc("2026-01-01T00:00"), 0, tz="UTC") == []


# --- slots_between and latest_slot ----------------------------------------------------

HOURLY = CronTrigger("0 * * * *")
DAILY_9_BERLIN = CronTrigger("0 9 * * *", timezone=BER)

# (trigger, start, end, limit, expected slots in (start, end]); bare times are on 2026-11-24
SLOT_CASES: list[tuple[Trigger, str, str, int, str]] = [
    (HOURLY, "10:00", "13:00", 100, "11:00 12:00 13:00"),
    (HOURLY, "10:00", "20:00", 2, "11:00 12:00"),
    (HOURLY, "10:00", "10:59", 100, ""),
    (HOURLY, "10:00", "09:00", 100, ""),
    (HOURLY, "10:00", "10:00", 100, ""),
    (DAILY_9_BERLIN, "00:00", "2026-11-26T00:00", 100, "08:00 2026-11-25T08:00"),
    (EVERY_15M, "10:05", "10:35", 100, "10:20 10:35"),
    (EVERY_15M, "10:05", "12:00", 1, "10:20"),
    (AT, "10:00", "11:00", 100, "11:00"),
    (AT, "11:00", "12:00", 100, ""),
    (WebhookTrigger(), "10:00", "12:00", 100, ""),
    (CronTrigger("@reboot"), "10:00", "12:00", 100, ""),
]


@pytest.mark.parametrize(("trigger", "start", "end", "limit", "slots"), SLOT_CASES)
def test_slots_between(trigger: Trigger, start: str, end: str, limit: int, slots: str) -> None:
    got = slots_between(trigger, utc(start), utc(end), tz="UTC", limit=limit)
    assert got == [utc(s) for s in slots.split()]


# (trigger, start, end, newest slot in (start, end] or "")
LATEST_CASES: list[tuple[Trigger, str, str, str]] = [
    (CronTrigger("* * * * *"), "2026-11-01T00:00", "2026-11-24T10:30:30", "2026-11-24T10:30"),
    (CronTrigger("0 9 * * *"), "2026-11-01T00:00", "2026-11-24T08:59", "2026-11-23T09:00"),
    (CronTrigger("0 0 1 1 *"), "2020-06-01T00:00", "2026-11-24T00:00", "2026-01-01T00:00"),
    (CronTrigger("0 0 1 1 *"), "2026-06-01T00:00", "2026-11-24T00:00", ""),
    (CronTrigger("0 9 * * *"), "2026-11-24T09:00", "2026-11-24T09:00", ""),
    (EVERY_15M, "2026-11-24T10:05", "2026-11-24T12:00", "2026-11-24T11:50"),
    (EVERY_15M, "2026-11-24T10:05", "2026-11-24T10:19", ""),
    (AT, "2026-11-01T00:00", "2026-11-30T00:00", "2026-11-24T11:00"),
    (WebhookTrigger(), "2026-11-01T00:00", "2026-11-30T00:00", ""),
]


@pytest.mark.parametrize(("trigger", "start", "end", "newest"), LATEST_CASES)
def test_latest_slot(trigger: Trigger, start: str, end: str, newest: str) -> None:
    got = latest_slot(trigger, utc(start), utc(end), tz="UTC")
    assert got == (utc(newest) if newest else None)


# --- words ------------------------------------------------------------------------------

WEEKDAYS_NYC = CronTrigger("0 9 * * MON-FRI", timezone=NYC)
AT_NYC = AtTrigger(utc("2026-07-01T10:00:30"), timezone=NYC)

EXPLAIN_CASES: list[tuple[Trigger, str]] = [
    (CronTrigger("0 9 * * 1-5"), "At 09:00 on Monday through Friday (Europe/Berlin)"),
    (WEEKDAYS_NYC, "At 09:00 on Monday through Friday (America/New_York)"),
    (CronTrigger("* * * * *"), "Every minute (Europe/Berlin)"),
    (CronTrigger("0 0 L * *"), "At 00:00 on the last day of every month (Europe/Berlin)"),
    (CronTrigger("0 0 * * 1#2"), "At 00:00 on the second Monday of the month (Europe/Berlin)"),
    (CronTrigger("@reboot"), "When the daemon starts"),
    (AT, "Once at 2026-11-24 12:00 +01:00 (Europe/Berlin)"),
    (AT_NYC, "Once at 2026-07-01 06:00:30 -04:00 (America/New_York)"),
    (EVERY_15M, "Every 15 minutes"),
    (EveryTrigger(60), "Every minute"),
    (EveryTrigger(90), "Every 90 seconds"),
    (EveryTrigger(7200), "Every 2 hours"),
    (EveryTrigger(86400), "Every day"),
    (WebhookTrigger(), "On webhook"),
    (WebhookTrigger(signature="github", secret="gh"), "On webhook (github signature)"),
]


@pytest.mark.parametrize(("trigger", "words"), EXPLAIN_CASES)
def test_explain(trigger: Trigger, words: str) -> None:
    assert explain(trigger, tz=BER) == words


SPEC_CASES: list[tuple[Trigger, str]] = [
    (CronTrigger("0 0 * * *", source="@daily"), "@daily"),
    (CronTrigger("*/15 * * * *"), "*/15 * * * *"),
    (AT, "2026-11-24T12:00:00+01:00"),
    (EVERY_15M, "15m"),
    (EveryTrigger(90), "90s"),
    (EveryTrigger(7200), "2h"),
    (EveryTrigger(86400), "1d"),
    (WebhookTrigger(signature="github"), "webhook"),
]


@pytest.mark.parametrize(("trigger", "spec"), SPEC_CASES)
def test_describe_trigger_spec(trigger: Trigger, spec: str) -> None:
    assert describe_trigger_spec(trigger) == spec


FORMAT_CASES = [
    ("2026-03-29T01:00:00", BER, "2026-03-29T03:00:00+02:00"),
    ("2026-10-25T00:30:00", BER, "2026-10-25T02:30:00+02:00"),
    ("2026-10-25T01:30:00", BER, "2026-10-25T02:30:00+01:00"),
    ("2026-11-01T06:15:00.75", NYC, "2026-11-01T01:15:00-05:00"),
    ("2026-11-01T06:15:00", "UTC", "2026-11-01T06:15:00+00:00"),
]


@pytest.mark.parametrize(("instant", "zone", "text"), FORMAT_CASES)
def test_format_instant(instant: str, zone: str, text: str) -> None:
    assert format_instant(utc(instant), zone) == text


# (trigger, expected warning fragment or None)
WARNING_CASES: list[tuple[Trigger, str | None]] = [
    (CronTrigger("* * * * *"), "as often as every minute"),
    (CronTrigger("*/2 * * * *"), "as often as every 2 minutes"),
    (CronTrigger("0,1 9 * * *"), "as often as every minute"),
    (CronTrigger("*/5 * * * *"), None),
    (CronTrigger("0 9 * * *"), None),
    (CronTrigger("@reboot"), None),
    (EveryTrigger(60), "every minute"),
    (EveryTrigger(299), "every 299 seconds"),
    (EveryTrigger(300), None),
    (EVERY_15M, None),
    (AT, None),
    (WebhookTrigger(), None),
]


@pytest.mark.parametrize(("trigger", "warning"), WARNING_CASES)
def test_frequency_warning(trigger: Trigger, warning: str | None) -> None:
    got = frequency_warning(trigger, tz=BER, now=utc("2026-11-24T10:00"))
    if warning is None:
        assert got is None
    else:
        assert got is not None and warning in got and "5 minutes" in got
        assert got.count(".") == 1 and got.endswith(".")
