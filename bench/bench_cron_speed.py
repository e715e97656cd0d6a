"""Speed of the schedule core: the next 10 fires of 1,000 cron expressions (bench/README.md).

The same 1,000 random expressions (tests/core/cron_random.py, fixed seed; the ones all
three libraries accept) in Europe/Berlin from a start in 2026, through:

- daycare's core (`core.schedule.next_fires`), with its caches cleared before each
  round (every expression parsed again) and warm (parsed once, as in the daemon);
- bare cronsim (`CronSim(expr, start)`, 10 x `next`): parsing included;
- croniter (`croniter(expr, start)`, 10 x `get_next`): parsing included, when installed.

Each library runs 5 rounds in turn; the median round is reported, with the time per
expression. croniter is not a dependency of daycare: install it into the venv first
(`.venv/bin/pip install croniter`) or the bench prints its row as missing.

Run: `.venv/bin/python bench/bench_cron_speed.py [-n 1000] [--rounds 5]`; prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "core"))

from cron_random import expression  # noqa: E402
from cronsim import CronSim, CronSimError  # noqa: E402

from daycare_cli.core import schedule  # noqa: E402
from daycare_cli.core.errors import ScheduleError  # noqa: E402
from daycare_cli.core.task import CronTrigger  # noqa: E402

ZONE = "Europe/Berlin"
START = datetime(2026, 1, 15, 10, 7, 30, tzinfo=ZoneInfo(ZONE))
FIRES = 10


def expressions(count: int) -> list[str]:
    """`count` expressions every library accepts and finds 10 fires of, spread over the year."""
    rng = random.Random(10)
    try:
        from croniter import croniter
    except ImportError:
        croniter = None
    found: list[str] = []
    while len(found) < count:
        target = datetime(2026, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23))
        expr = expression(rng, target)
        try:
            schedule.normalize_cron(expr)
            cronsim_round([expr])
            if croniter is not None:
                croniter_round([expr])
        except (ScheduleError, CronSimError, StopIteration, ValueError, KeyError):
            continue  # a form one of them refuses, or too rare for one of them
        found.append(expr)
    return found


def daycare_round(exprs: list[str], *, cold: bool) -> None:
    if cold:
        schedule._normalize_cached.cache_clear()
        schedule.cron_spec.cache_clear()
    for expr in exprs:
        schedule.next_fires(CronTrigger(schedule.normalize_cron(expr)), START, FIRES, tz=ZONE)


def cronsim_round(exprs: list[str]) -> None:
    for expr in exprs:
        it = CronSim(expr, START)
        for _ in range(FIRES):
            next(it)


def croniter_round(exprs: list[str]) -> None:
    from croniter import croniter

    for expr in exprs:
        it = croniter(expr, START)
        for _ in range(FIRES):
            it.get_next(datetime)


def measure(run: Callable[[], None], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="expressions")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    exprs = expressions(args.n)
    rows: list[tuple[str, list[float] | None]] = []
    rows.append(
        (
            "daycare core, parsed each round",
            measure(lambda: daycare_round(exprs, cold=True), args.rounds),
        )
    )
    rows.append(
        (
            "daycare core, parsed once",
            measure(lambda: daycare_round(exprs, cold=False), args.rounds),
        )
    )
    rows.append(("cronsim (bare)", measure(lambda: cronsim_round(exprs), args.rounds)))
    try:
        import croniter  # noqa: F401
    except ImportError:
        rows.append(("croniter (not installed)", None))
    else:
        rows.append(("croniter", measure(lambda: croniter_round(exprs), args.rounds)))

    print(f"### Next {FIRES} fires of {len(exprs)} cron expressions ({ZONE})\n")
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| library | median round (ms) | per expression (µs) | min – max round (ms) |")
    print("|---|---|---|---|")
    for name, times in rows:
        if times is None:
            print(f"| {name} | – | – | – |")
            continue
        median = statistics.median(times)
        print(
            f"| {name} | {median * 1000:.0f} | {median / len(exprs) * 1e6:.0f} | "
            f"{min(times) * 1000:.0f} – {max(times) * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()
