"""The differential test's cases and comparison, shared by the test and bench/bench_cron_diff.py."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cron_random import expression
from cronie_model import fires_between, transitions

from daycare_cli.core.errors import ScheduleError
from daycare_cli.core.schedule import normalize_cron, slots_between
from daycare_cli.core.task import CronTrigger


def differential_cases(
    rng: random.Random, zones: list[str], per_zone: int, years: tuple[int, int]
) -> list[tuple[str, str, datetime]]:
    """(zone, expression, after) around transitions of each zone in those years."""
    cases = []
    for name in zones:
        zone = ZoneInfo(name)
        moments = transitions(zone, *years)
        if not moments:
            continue
        for _ in range(per_zone):
            moment = rng.choice(moments)
            after = moment + timedelta(seconds=rng.randint(-4 * 3600, 4 * 3600))
            wall = (moment + timedelta(minutes=rng.randint(-90, 90))).astimezone(zone)
            while True:
                expr = expression(rng, wall.replace(tzinfo=None))
                try:
                    normalize_cron(expr)
                except ScheduleError:
                    continue  # e.g. a day no chosen month has: draw again
                break
            cases.append((name, expr, after))
    return cases


def compare(name: str, expr: str, after: datetime, window: timedelta) -> str | None:
    """None when daycare and the model agree on every fire in (after, after + window]."""
    zone = ZoneInfo(name)
    end = after + window
    model = fires_between(expr, zone, after, end, warmup=timedelta(hours=12))
    trigger = CronTrigger(normalize_cron(expr), source=expr)
    ours = slots_between(trigger, after, end, tz=name, limit=10_000)
    if [f.timestamp() for f in ours] == [f.timestamp() for f in model]:
        return None
    show = lambda fs: [f.astimezone(zone).isoformat() for f in fs][:8]  # noqa: E731
    return f"{name} {expr!r} after {after.astimezone(zone)}: ours {show(ours)} cronie {show(model)}"
