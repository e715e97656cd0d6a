"""DST notes on fires (core/dstnote.py through schedule.next_fires_noted): what a clock
change did to a fire, on the days clocks go forward and back in Berlin, Lord Howe
(half an hour) and Santiago (at midnight)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from test_schedule_cronie import local, local_fires

from daycare_cli.core.schedule import next_fires, next_fires_noted, normalize_cron
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger

BER, LHI, SCL = "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"

# (zone, after, expression, [(fire, note or None)]); fires as in test_schedule_cronie.
NOTE_CASES: list[tuple[str, str, str, list[tuple[str, str | None]]]] = [
    # Berlin forward: 02:00-02:59 does not exist on 2026-03-29.
    (
        BER,
        "2026-03-29 00:00+01",
        "30 2 * * *",
        [
            ("03:00+02", "02:30 does not exist on 2026-03-29: runs at 03:00 +02:00"),
            ("30 02:30+02", None),
        ],
    ),
    (
        BER,
        "2026-03-29 00:00+01",
        "0,30 2 * * *",
        [("03:00+02", "02:00 and 02:30 do not exist on 2026-03-29: run once at 03:00 +02:00")],
    ),
    (
        BER,
        "2026-03-29 00:00+01",
        "0 2,3 * * *",
        [
            (
                "03:00+02",
                "02:00 does not exist on 2026-03-29: runs at 03:00 +02:00, with the 03:00 fire",
            )
        ],
    ),
    (BER, "2026-03-29 01:10+01", "*/30 * * * *", [("01:30+01", None), ("03:00+02", None)]),
    # Berlin back: 02:00-02:59 happens twice on 2026-10-25.
    (
        BER,
        "2026-10-25 00:00+02",
        "30 2 * * *",
        [
            ("02:30+02", "02:30 happens twice on 2026-10-25: runs once, at +02:00"),
            ("26 02:30+01", None),
        ],
    ),
    (
        BER,
        "2026-10-25 00:00+02",
        "*/30 2 * * *",
        [
            ("02:00+02", "02:00 happens twice on 2026-10-25: runs both times, first at +02:00"),
            ("02:30+02", "02:30 happens twice on 2026-10-25: runs both times, first at +02:00"),
            ("02:00+01", "02:00 happens twice on 2026-10-25: runs again at +01:00"),
            ("02:30+01", "02:30 happens twice on 2026-10-25: runs again at +01:00"),
            ("26 02:00+01", None),
        ],
    ),
    # Lord Howe forward half an hour: 02:00-02:29 does not exist on 2026-10-04.
    (
        LHI,
        "2026-10-04 00:00+10:30",
        "15 2 * * *",
        [("02:30+11", "02:15 does not exist on 2026-10-04: runs at 02:30 +11:00")],
    ),
    (
        LHI,
        "2026-10-04 00:00+10:30",
        "0-29 2 * * *",
        [
            (
                "02:30+11",
                "02:00 to 02:29 (30 times) do not exist on 2026-10-04: run once at 02:30 +11:00",
            ),
            ("5 02:00+11", None),
        ],
    ),
    # Lord Howe back half an hour: 01:30-01:59 happens twice on 2026-04-05.
    (
        LHI,
        "2026-04-05 00:00+11",
        "45 1 * * *",
        [("01:45+11", "01:45 happens twice on 2026-04-05: runs once, at +11:00")],
    ),
    (
        LHI,
        "2026-04-05 01:20+11",
        "*/15 1 * * *",
        [
            ("01:30+11", "01:30 happens twice on 2026-04-05: runs both times, first at +11:00"),
            ("01:45+11", "01:45 happens twice on 2026-04-05: runs both times, first at +11:00"),
            ("01:30+10:30", "01:30 happens twice on 2026-04-05: runs again at +10:30"),
            ("01:45+10:30", "01:45 happens twice on 2026-04-05: runs again at +10:30"),
        ],
    ),
    # Santiago forward at midnight: Sunday 00:00-00:59 does not exist on 2026-09-06.
    (
        SCL,
        "2026-09-05 22:00-04",
        "30 0 * * *",
        [("6 01:00-03", "00:30 does not exist on 2026-09-06: runs at 01:00 -03:00")],
    ),
    # Santiago back at midnight: Saturday 23:00-23:59 happens twice on 2026-04-04.
    (
        SCL,
        "2026-04-04 22:00-03",
        "0 23 * * *",
        [
            ("23:00-03", "23:00 happens twice on 2026-04-04: runs once, at -03:00"),
            ("5 23:00-04", None),
        ],
    ),
    (
        SCL,
        "2026-04-04 22:40-03",
        "*/30 23 * * *",
        [
            ("23:00-03", "23:00 happens twice on 2026-04-04: runs both times, first at -03:00"),
            ("23:30-03", "23:30 happens twice on 2026-04-04: runs both times, first at -03:00"),
            ("23:00-04", "23:00 happens twice on 2026-04-04: runs again at -04:00"),
            ("23:30-04", "23:30 happens twice on 2026-04-04: runs again at -04:00"),
        ],
    ),
]


@pytest.mark.parametrize(("zone", "after", "expr", "fires"), NOTE_CASES)
def test_dst_notes(zone: str, after: str, expr: str, fires: list[tuple[str, str | None]]) -> None:
    start = local(after)
    expected = local_fires(start, ", ".join(f for f, _ in fires))
    trigger = CronTrigger(normalize_cron(expr), source=expr)
    got = next_fires_noted(trigger, start, len(fires), tz=zone)
    assert [g.at.timestamp() for g in got] == [e.timestamp() for e in expected]
    assert [g.dst for g in got] == [note for _, note in fires]
    # The same instants as next_fires: notes never change when a task fires.
    assert [g.at for g in got] == next_fires(trigger, start, len(fires), tz=zone)


@pytest.mark.parametrize(
    ("wall", "fire", "note"),
    [
        (
            "2026-03-29T02:30",
            "2026-03-29T03:30:00+02:00",
            "02:30 does not exist on 2026-03-29: runs at 03:30 +02:00",
        ),
        (
            "2026-10-25T02:30",
            "2026-10-25T02:30:00+02:00",
            "02:30 happens twice on 2026-10-25: runs once, at +02:00",
        ),
        ("2026-10-25T03:30", "2026-10-25T03:30:00+01:00", None),
    ],
)
def test_at_notes(wall: str, fire: str, note: str | None) -> None:
    """An `at` wall time reads as Python reads it (a skipped 02:30 is 01:30 UTC); the note
    says so. A naive time and one already in the zone (as the task file reader makes it)
    get the same note."""
    after = datetime(2026, 1, 1, tzinfo=ZoneInfo(BER))
    for at in (
        datetime.fromisoformat(wall),
        datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(BER)),
    ):
        (got,) = next_fires_noted(AtTrigger(at), after, 3, tz=BER)
        assert got.at.timestamp() == datetime.fromisoformat(fire).timestamp()
        assert got.dst == note


def test_no_notes_for_explicit_offsets_and_intervals() -> None:
    after = datetime(2026, 1, 1, tzinfo=ZoneInfo(BER))
    fixed = AtTrigger(datetime.fromisoformat("2026-03-29T02:30+01:00"))
    assert [f.dst for f in next_fires_noted(fixed, after, 1, tz=BER)] == [None]
    every = next_fires_noted(EveryTrigger(3600), local("2026-03-29 01:30+01"), 2, tz=BER)
    assert [f.dst for f in every] == [None, None]
    assert next_fires_noted(CronTrigger("@reboot"), after, 3, tz=BER) == []


# --- upcoming(): the next fires from a trigger's stored state ----------------------


def test_upcoming_counts_every_from_the_stored_slot() -> None:
    from daycare_cli.core.schedule import upcoming

    now = local("2026-11-24 10:20+01")
    every = EveryTrigger(900)
    stored = local("2026-11-24 10:07+01")  # the last slot (or the instant first planned)
    fires = upcoming(every, now=now, last_slot=stored, tz=BER, n=2)
    assert [f.at for f in fires] == [local("2026-11-24 10:22+01"), local("2026-11-24 10:37+01")]
    fresh = upcoming(every, now=now, last_slot=None, tz=BER, n=1)
    assert [f.at for f in fresh] == [local("2026-11-24 10:35+01")]


def test_upcoming_at_and_cron() -> None:
    from daycare_cli.core.schedule import upcoming

    now = local("2026-03-28 12:00+01")
    at = AtTrigger(datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo(BER)))
    (fire,) = upcoming(at, now=now, last_slot=None, tz=BER)
    assert fire.dst == "02:30 does not exist on 2026-03-29: runs at 03:30 +02:00"
    assert upcoming(at, now=now, last_slot=fire.at, tz=BER) == []  # it fired
    cron = CronTrigger("30 2 * * *")
    (first,) = upcoming(cron, now=now, last_slot=local("2026-03-28 02:30+01"), tz=BER)
    assert first.at == local("2026-03-29 03:00+02")
    assert first.dst == "02:30 does not exist on 2026-03-29: runs at 03:00 +02:00"
