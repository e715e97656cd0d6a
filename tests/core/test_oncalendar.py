"""Cron <-> OnCalendar: tables both ways, and systemd's own calendar as the judge.

`systemd-analyze calendar --iterations=20` (Debian package `systemd`) computes the next
elapse times of each OnCalendar= line we write; in a zone without DST they must be
daycare's next fires exactly, and in a zone with DST they must differ exactly where
core/dst.py says systemd differs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from daycare_cli.core.dst import engine_differences
from daycare_cli.core.oncalendar import NotExpressible, cron_to_oncalendar, oncalendar_to_cron
from daycare_cli.core.schedule import next_fires
from daycare_cli.core.task import CronTrigger

# (cron, zone, OnCalendar lines)
TO_CALENDAR = [
    ("*/15 * * * *", "UTC", ["*-*-* *:00/15:00 UTC"]),
    ("0 9 * * *", "Europe/Berlin", ["*-*-* 09:00:00 Europe/Berlin"]),
    ("0 17 * * MON-FRI", "UTC", ["Mon..Fri *-*-* 17:00:00 UTC"]),
    ("0 0 * * 0", "UTC", ["Sun *-*-* 00:00:00 UTC"]),
    ("0 0 * * 7", "UTC", ["Sun *-*-* 00:00:00 UTC"]),
    ("0 0 * * 5-7", "UTC", ["Fri..Sun *-*-* 00:00:00 UTC"]),
    ("@daily", "UTC", ["*-*-* 00:00:00 UTC"]),
    ("@monthly", "UTC", ["*-*-01 00:00:00 UTC"]),
    ("30 8 1,15 * *", "UTC", ["*-*-01,15 08:30:00 UTC"]),
    ("0 9 L * *", "UTC", ["*-*~01 09:00:00 UTC"]),
    ("0 9 * * 5L", "UTC", ["Fri *-*~07/1 09:00:00 UTC"]),
    ("0 0 * * 1#2", "UTC", ["Mon *-*-08..14 00:00:00 UTC"]),
    ("0 0 1 * 1", "UTC", ["*-*-01 00:00:00 UTC", "Mon *-*-* 00:00:00 UTC"]),
    ("0 0 */2 * MON", "UTC", ["Mon *-*-01/2 00:00:00 UTC"]),
    ("5-59/20 2-4 * 1-3,6 *", "UTC", ["*-01..03,06-* 02..04:05/20:00 UTC"]),
    ("0 12 * JAN,JUL *", "UTC", ["*-01,07-* 12:00:00 UTC"]),
]


@pytest.mark.parametrize(("cron", "zone", "expected"), TO_CALENDAR)
def test_cron_to_oncalendar(cron: str, zone: str, expected: list[str]) -> None:
    assert cron_to_oncalendar(cron, zone) == expected


@pytest.mark.parametrize(("cron", "reason"), [("0 0 LW * *", "LW"), ("@reboot", "@reboot")])
def test_what_systemd_cannot_say_is_refused_with_the_reason(cron: str, reason: str) -> None:
    with pytest.raises(NotExpressible, match=reason):
        cron_to_oncalendar(cron, "UTC")


# (OnCalendar, cron, zone)
FROM_CALENDAR = [
    ("daily", "0 0 * * *", None),
    ("weekly", "0 0 * * 1", None),
    ("Mon..Fri *-*-* 09:00", "0 9 * * 1-5", None),
    ("Sat,Sun 10:30", "30 10 * * 0,6", None),
    ("*-*-* *:00/15:00 Europe/Berlin", "*/15 * * * *", "Europe/Berlin"),
    ("*-*-01,15 08:30:00", "30 8 1,15 * *", None),
    ("*-*~01 09:00", "0 9 L * *", None),
    ("Fri *-*~07/1 09:00:00 UTC", "0 9 * * 5L", "UTC"),
    ("Mon *-*-08..14 00:00", "0 0 * * 1#2", None),
    ("*-01,04-01 05..20/5:00,30", "0,30 5-20/5 1 1,4 *", None),
]


@pytest.mark.parametrize(("spec", "cron", "zone"), FROM_CALENDAR)
def test_oncalendar_to_cron(spec: str, cron: str, zone: str | None) -> None:
    assert oncalendar_to_cron(spec) == (cron, zone)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("*-*-* 09:00:30", "seconds"),
        ("2027-*-* 09:00", "year"),
        ("Mon *-*-01 09:00", "weekday and a day of the month"),
        ("*-*~03 09:00", "from the month's end"),
        ("*-*-* 25:00", "out of range"),
    ],
)
def test_what_cron_cannot_say_is_refused_with_the_reason(spec: str, reason: str) -> None:
    with pytest.raises(NotExpressible, match=reason):
        oncalendar_to_cron(spec)


# --- systemd-analyze as the judge --------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is absent (Debian package `systemd`)"
)
_ELAPSE_RE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def systemd_elapses(specs: list[str], base: datetime, n: int) -> list[datetime]:
    """The next `n` elapse times of the union of `specs` after `base`, per systemd."""
    found: set[datetime] = set()
    for spec in specs:
        assert ANALYZE is not None
        out = subprocess.run(
            [
                ANALYZE,
                "calendar",
                f"--iterations={n}",
                f"--base-time=@{int(base.timestamp())}",
                spec,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
            timeout=30,
            check=True,
        ).stdout
        for stamp in _ELAPSE_RE.findall(out):
            found.add(datetime.fromisoformat(stamp).replace(tzinfo=UTC))
    return sorted(found)[:n]


EXPRESSIONS = [
    "*/15 * * * *",
    "0 9 * * *",
    "30 8 * * *",
    "0 17 * * MON-FRI",
    "0 0 * * 0",
    "0 0 1 * 1",
    "0 9 L * *",
    "0 9 * * 5L",
    "0 0 * * 1#2",
    "5-59/20 2-4 * 1-3,6 *",
    "*/10 2 * * *",
    "30 2 * * *",
    "0 */2 * * *",
]


@needs_analyze
@pytest.mark.parametrize("cron", EXPRESSIONS)
@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_systemd_elapses_equal_daycare_fires_without_dst(cron: str, zone: str) -> None:
    base = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    ours = next_fires(CronTrigger(cron), base, 20, tz=zone)
    assert systemd_elapses(cron_to_oncalendar(cron, zone), base, 20) == ours


@needs_analyze
@pytest.mark.parametrize("cron", ["30 2 * * *", "*/10 2 * * *", "0 */2 * * *", "*/15 * * * *"])
@pytest.mark.parametrize(
    ("zone", "base"),
    [
        ("Europe/Berlin", datetime(2026, 3, 28, 23, 0, tzinfo=UTC)),  # forward on 03-29
        ("Europe/Berlin", datetime(2026, 10, 24, 23, 0, tzinfo=UTC)),  # back on 10-25
        ("America/New_York", datetime(2026, 3, 8, 5, 0, tzinfo=UTC)),
        ("America/New_York", datetime(2026, 11, 1, 4, 0, tzinfo=UTC)),
    ],
)
def test_systemd_differs_on_dst_days_exactly_as_documented(
    cron: str, zone: str, base: datetime
) -> None:
    trigger = CronTrigger(cron)
    ours = next_fires(trigger, base, 20, tz=zone)
    end = ours[-1]
    theirs = [t for t in systemd_elapses(cron_to_oncalendar(cron, zone), base, 40) if t <= end]
    diffs = engine_differences(trigger, zone, "systemd", now=base, years=1)
    first = [d for d in diffs if d.transition.at <= end]
    only_ours = {t for d in first for t in d.only_daycare}
    only_theirs = {t for d in first for t in d.only_engine}
    assert set(ours) - set(theirs) == only_ours
    assert set(theirs) - set(ours) == only_theirs
    # systemd never adds a slot: it drops cronie's catch-up at the jump and second passes.
    assert not only_theirs
