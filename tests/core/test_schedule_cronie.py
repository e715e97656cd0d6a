"""core/schedule.py against cronie: named cases and a differential test against a model.

The model (cronie_model.py) is a transcription of cronie's `src/entry.c` and the main
loop of `src/cron.c`, run minute by minute over real instants. The differential test
draws random expressions (cron_random.py) for days when the clock changes in zones
picked with a fixed seed and compares every fire in a window; `bench/bench_cron_diff.py`
runs the same over every zone with DST in 2005-2030.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from cron_differential import compare, differential_cases
from cron_random import expression
from cronie_model import fires_between, parse_entry, transitions

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.schedule import explain, next_fires, normalize_cron
from daycare_cli.core.task import CronTrigger

LHI = "Australia/Lord_Howe"  # half-hour shift: 02:00 +11 -> 01:30 +10:30, 02:00 -> 02:30
CAI = "Africa/Cairo"  # at midnight: Fri 00:00 -> 01:00; Thu 24:00 -> 23:00
SCL = "America/Santiago"  # at midnight: Sat 24:00 -> Sun 01:00; Sat 24:00 -> 23:00
HAV = "America/Havana"  # at midnight: Sun 00:00 -> 01:00; Sun 01:00 -> 00:00
TRL = "Antarctica/Troll"  # two hours: 01:00 +00 -> 03:00 +02; 03:00 +02 -> 01:00 +00


def local(text: str) -> datetime:
    """`2026-10-25 02:10+01` (wall time with its UTC offset in hours) as an aware datetime."""
    return datetime.fromisoformat(text + (":00" if text[-3] in "+-" else ""))


def local_fires(after: datetime, fires: str) -> list[datetime]:
    """`02:45+02, 26 02:00+01, 2026-05-24 00:00+03`: a time on `after`'s date, on another
    day of its month, or on any date."""
    result = []
    for item in fires.split(", "):
        day, _, clock = item.rpartition(" ")
        if "-" in day:
            date = datetime.fromisoformat(day).date()
        else:
            date = after.date().replace(day=int(day)) if day else after.date()
        result.append(local(f"{date}T{clock}"))
    return result


# (zone, after, expression, the next fires). Dates are in 2026; see the zone comments.
CRONIE_CASES = [
    # Lord Howe, back half an hour: 01:30-01:59 happens twice.
    (LHI, "2026-04-05 00:00+11", "*/15 3 * * *", "03:00+10:30, 03:15+10:30, 03:30+10:30"),
    (LHI, "2026-04-05 00:00+11", "1 */3 * * *", "00:01+11, 03:01+10:30, 06:01+10:30"),
    (LHI, "2026-04-05 12:00+10:30", "* 23 * * *", "23:00+10:30, 23:01+10:30, 23:02+10:30"),
    (
        LHI,
        "2026-04-05 00:50+11",
        "*/15 1 * * *",
        "01:00+11, 01:15+11, 01:30+11, 01:45+11, 01:30+10:30, 01:45+10:30, 6 01:00+10:30",
    ),
    (LHI, "2026-04-05 00:00+11", "45 1 * * *", "01:45+11, 6 01:45+10:30"),
    (LHI, "2026-04-05 01:35+10:30", "45 1 * * *", "6 01:45+10:30"),
    (LHI, "2026-04-05 01:35+10:30", "*/15 1 * * *", "01:45+10:30, 6 01:00+10:30"),
    # Lord Howe, forward half an hour: 02:00-02:29 does not exist.
    (LHI, "2026-10-04 00:00+10:30", "15 2 * * *", "02:30+11, 5 02:15+11"),
    (LHI, "2026-10-04 00:00+10:30", "*/15 2 * * *", "02:30+11, 02:45+11, 5 02:00+11"),
    (LHI, "2026-10-04 00:00+10:30", "0,15 2 * * *", "02:30+11, 5 02:00+11"),
    (LHI, "2026-10-04 00:00+10:30", "1 */3 * * *", "00:01+10:30, 03:01+11, 06:01+11"),
    # Cairo, forward at midnight: Friday 00:00-00:59 does not exist.
    (CAI, "2026-04-23 23:00+02", "0 0 * * *", "24 01:00+03, 25 00:00+03"),
    (CAI, "2026-04-23 23:10+02", "*/30 * * * *", "23:30+02, 24 01:00+03, 24 01:30+03"),
    (CAI, "2026-04-23 23:00+02", "* 0 24 * *", "2026-05-24 00:00+03, 2026-05-24 00:01+03"),
    (CAI, "2026-04-23 22:30+02", "0 * * * FRI", "24 01:00+03, 24 02:00+03"),
    (CAI, "2026-04-23 22:00+02", "* 1 * * FRI", "24 01:00+03, 24 01:01+03"),
    # Cairo, back at midnight: Thursday 23:00-23:59 happens twice.
    (CAI, "2026-10-29 22:00+03", "30 23 * * *", "23:30+03, 30 23:30+02"),
    (
        CAI,
        "2026-10-29 22:00+03",
        "*/30 23 * * THU",
        "23:00+03, 23:30+03, 23:00+02, 23:30+02, 2026-11-05 23:00+02",
    ),
    (CAI, "2026-10-29 23:30+02", "0 0 * * FRI", "30 00:00+02"),
    # Santiago, forward at midnight: Sunday 00:00-00:59 does not exist.
    (SCL, "2026-09-05 23:00-04", "* 1 * * SUN", "6 01:00-03, 6 01:01-03"),
    (SCL, "2026-09-05 23:00-04", "0 0 * * SUN", "6 01:00-03, 13 00:00-03"),
    (SCL, "2026-09-05 23:00-04", "*/30 0 * * *", "7 00:00-03, 7 00:30-03"),
    # Santiago, back at midnight: Saturday 23:00-23:59 happens twice.
    (SCL, "2026-04-04 22:00-03", "0 23 * * SAT", "23:00-03, 11 23:00-04"),
    (
        SCL,
        "2026-04-04 22:00-03",
        "*/20 23 * * 6",
        "23:00-03, 23:20-03, 23:40-03, 23:00-04, 23:20-04, 23:40-04, 11 23:00-04",
    ),
    (SCL, "2026-04-04 23:30-04", "0 0 * * SUN", "5 00:00-04"),
    # Havana, forward at midnight, back at 01:00.
    (HAV, "2026-03-07 23:00-05", "15 0 * * *", "8 01:00-04, 9 00:15-04"),
    (HAV, "2026-03-07 23:50-05", "*/15 * 8 3 *", "8 01:00-04, 8 01:15-04"),
    (HAV, "2026-10-31 23:00-04", "30 0 * * *", "2026-11-01 00:30-04, 2026-11-02 00:30-05"),
    (
        HAV,
        "2026-10-31 23:00-04",
        "*/30 0 * * *",
        "2026-11-01 00:00-04, 2026-11-01 00:30-04, 2026-11-01 00:00-05, "
        "2026-11-01 00:30-05, 2026-11-02 00:00-05",
    ),
    # Troll, two hours each way.
    (TRL, "2026-03-29 00:00+00", "30 1 * * *", "03:00+02, 30 01:30+02"),
    (TRL, "2026-03-29 00:00+00", "0,30 1-2 * * *", "03:00+02, 30 01:00+02"),
    (TRL, "2026-03-29 00:40+00", "*/30 * * * *", "03:00+02, 03:30+02"),
    (TRL, "2026-10-25 00:00+02", "30 2 * * *", "02:30+02, 26 02:30+00"),
    (TRL, "2026-10-25 00:30+02", "0 * * * *", "01:00+02, 02:00+02, 01:00+00, 02:00+00, 03:00+00"),
    # Field rules: `9-9/2` is {9}; a weekday range may end on Sunday's 0.
    ("UTC", "2026-01-01 10:00+00", "0 9-9/2 * * *", "2 09:00+00, 3 09:00+00"),
    ("UTC", "2026-01-01 10:00+00", "0 9 * * SAT-SUN", "3 09:00+00, 4 09:00+00, 10 09:00+00"),
    ("UTC", "2026-01-01 10:00+00", "0 9 * * 6-0", "3 09:00+00, 4 09:00+00, 10 09:00+00"),
    ("UTC", "2026-01-01 10:00+00", "0 9 * * fri-sun", "2 09:00+00, 3 09:00+00, 4 09:00+00"),
    # The day rule: OR unless one day field starts with `*` (even `*/2`).
    ("UTC", "2026-01-01 10:00+00", "0 0 1,15 * MON", "5 00:00+00, 12 00:00+00, 15 00:00+00"),
    ("UTC", "2026-01-01 10:00+00", "0 0 */2 * MON", "5 00:00+00, 19 00:00+00"),
    # `*` later in a list is not a wildcard job (cronie's flag reads the first character).
    ("UTC", "2026-01-01 10:00+00", "1,* 9 * * *", "2 09:00+00, 2 09:01+00"),
]


@pytest.mark.parametrize(("zone", "after", "expr", "fires"), CRONIE_CASES)
def test_cronie_cases(zone: str, after: str, expr: str, fires: str) -> None:
    start = local(after)
    expected = local_fires(start, fires)
    trigger = CronTrigger(normalize_cron(expr), source=expr)
    got = next_fires(trigger, start, len(expected), tz=zone)
    assert [g.timestamp() for g in got] == [e.timestamp() for e in expected]
    # The model agrees with the table (so the table says what cronie does).
    model = fires_between(expr, ZoneInfo(zone), start, expected[-1], warmup=timedelta(hours=12))
    assert [m.timestamp() for m in model] == [e.timestamp() for e in expected]


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 9-9/2 * * *", "At 09:00 every day"),
        ("0 9 * * SAT-SUN", "At 09:00 on Saturday and Sunday"),
        ("0 9 * * 6-0", "At 09:00 on Saturday and Sunday"),
    ],
)
def test_explain_follows_cronie(expr: str, words: str) -> None:
    assert explain(CronTrigger(normalize_cron(expr)), tz="UTC") == f"{words} (UTC)"


@pytest.mark.parametrize(
    ("expr", "hint"),
    [
        ("0 0 * * FRI-MON", "runs upwards"),
        ("0 0 * * 6-0/2", "`6-7/2`"),
        ("30-10 * * * *", "runs upwards"),
        ("0 0 * * 1~5", "random"),
        ("0 0 1,,2 * *", "comma"),
        ("*-5 * * * *", "whole range"),
    ],
)
def test_cronie_would_read_nothing_so_we_refuse(expr: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        normalize_cron(expr)
    assert caught.value.hint is not None and hint in caught.value.hint


def test_cronie_reads_backwards_weekday_range_to_sunday() -> None:
    """The model (cronie) reads `6-0` as 6-7 and `6-0/2` as nothing: the rule we copy."""
    assert parse_entry("0 0 * * 6-0").dow == {0, 6, 7}
    assert parse_entry("0 0 * * 6-0/2").dow == set()


# --- the differential test -------------------------------------------------------------

NAMED_ZONES = [LHI, CAI, SCL, HAV, TRL, "Europe/Berlin", "America/New_York", "Australia/Sydney"]
SEED = 20260329
ZONES_SAMPLED = 14
CASES_PER_ZONE = 9
WINDOW = timedelta(hours=30)


def _dst_zones(rng: random.Random) -> list[str]:
    """The named zones and a seeded sample of the others that change their clocks."""
    others = sorted(available_timezones() - set(NAMED_ZONES))
    rng.shuffle(others)
    picked: list[str] = []
    for name in others:
        if len(picked) == ZONES_SAMPLED:
            break
        if name.startswith(("Etc/", "SystemV/")) or name in ("UTC", "GMT"):
            continue
        if transitions(ZoneInfo(name), 2024, 2024):
            picked.append(name)
    return NAMED_ZONES + picked


def test_differential_against_cronie_model() -> None:
    rng = random.Random(SEED)
    cases = differential_cases(rng, _dst_zones(rng), CASES_PER_ZONE, (2005, 2030))
    assert len(cases) >= 150
    differences = [d for case in cases if (d := compare(*case, WINDOW)) is not None]
    assert differences == []


def test_differential_fires_are_strictly_after_now() -> None:
    """next_fires from every minute of a fold agrees with the model's next fire."""
    zone = ZoneInfo(LHI)
    start = datetime(2026, 4, 4, 14, 0, tzinfo=UTC)  # 01:00 +11 on the day it goes back
    for expr in ("*/15 1 * * *", "45 1 * * *", "1 */3 * * *", "* 1 * * *"):
        model = fires_between(expr, zone, start, start + timedelta(days=2), warmup=timedelta(0))
        trigger = CronTrigger(normalize_cron(expr))
        for minute in range(0, 150, 7):
            now = start + timedelta(minutes=minute, seconds=minute % 3 * 20)
            expected = next(f for f in model if f.timestamp() > now.timestamp())
            (got,) = next_fires(trigger, now, tz=LHI)
            assert got.timestamp() == expected.timestamp(), (expr, now)


def test_month_days_agree_with_matching_each_date() -> None:
    """The arithmetic of month_days (weekday of the 1st, month length) against the
    date-by-date rule, over the model's random expressions and 2023-2025."""
    from daycare_cli.core.schedule import cron_spec

    rng = random.Random(7)
    for _ in range(300):
        target = datetime(2024, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23))
        try:
            spec = cron_spec(normalize_cron(expression(rng, target)))
        except ScheduleError:
            continue
        for year, month in [(2023, 2), (2024, 2), (2024, target.month), (2025, 12)]:
            last = (datetime(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
            by_date = tuple(d for d in range(1, last + 1) if spec.matches_date(year, month, d))
            assert spec.month_days(year, month) == by_date, (spec.text, year, month)
