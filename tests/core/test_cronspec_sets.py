"""Parsed cron expressions share their sets of days and weekdays (`core/cronspec.py`):
10,000 tasks make ~600 specs and only a few distinct sets, and a set of 31 days takes
2.2 KB. Sharing changes nothing a spec answers."""

from __future__ import annotations

from daycare_cli.core.cronspec import parse_cron


def test_equal_sets_are_one_object_and_specs_still_differ() -> None:
    a = parse_cron("5 9 * * 1-5")
    b = parse_cron("7 17 * * mon-fri")
    c = parse_cron("5 3 1 * *")
    last = parse_cron("5 8 L * *")
    assert a.days is b.days and a.weekdays is b.weekdays
    assert a.last_weekdays == frozenset() and a.last_weekdays is c.last_weekdays
    assert a.nth_weekdays is a.last_weekdays is last.nth_weekdays  # one empty set
    assert a.days == frozenset(range(1, 32)) and c.days == frozenset({1})
    assert a.weekdays == frozenset(range(1, 6)) and c.weekdays == frozenset(range(7))
    assert a != b and a.minutes == (5,) and b.minutes == (7,)
    # What the specs answer is their own.
    assert a.matches_date(2026, 11, 30) and not a.matches_date(2026, 11, 29)  # Mon, Sun
    assert c.matches_date(2026, 12, 1) and not c.matches_date(2026, 12, 2)
    assert last.last_day and last.matches_date(2026, 2, 28) and not last.matches_date(2026, 2, 27)
