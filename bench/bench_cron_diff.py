"""The differential test at full size: daycare's schedule core against a model of cronie.

Every IANA zone whose UTC offset changes between 2005 and 2030 (probed daily), and per
zone N random expressions (tests/core/cron_random.py: names, ranges, steps, lists, `L`,
`LW`, `nL`, `n#k`, macros; wildcard and fixed fields) each started at a random instant
within 4 hours of one of the zone's transitions; every fire in the following 30 hours is
compared with the model of cronie's loop (tests/core/cronie_model.py). The default
suite runs the same comparison on a fixed sample (tests/core/test_schedule_cronie.py).

Run: `.venv/bin/python bench/bench_cron_diff.py [--per-zone 20] [--seed 1]`; prints
Markdown, and every difference when there is one (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "core"))

from cron_differential import compare, differential_cases  # noqa: E402
from cronie_model import transitions  # noqa: E402

FIRST, LAST = 2005, 2030
WINDOW = timedelta(hours=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-zone", type=int, default=20, help="cases per zone")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    began = time.perf_counter()
    zones = [
        name
        for name in sorted(available_timezones())
        if not name.startswith(("posix/", "right/")) and transitions(ZoneInfo(name), FIRST, LAST)
    ]
    listed = time.perf_counter()
    rng = random.Random(args.seed)
    cases = differential_cases(rng, zones, args.per_zone, (FIRST, LAST))
    differences = [d for case in cases if (d := compare(*case, WINDOW)) is not None]
    done = time.perf_counter()
    expressions = {expr for _, expr, _ in cases}
    print(f"### Differential test against the cronie model ({FIRST}-{LAST})\n")
    print(
        "| zones with a transition | cases | distinct expressions | window | differences | time |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(zones)} | {len(cases)} | {len(expressions)} | 30 h after a start within "
        f"4 h of a transition | {len(differences)} | {done - listed:.0f} s "
        f"(+ {listed - began:.0f} s listing zones) |"
    )
    print(
        f"\nseed {args.seed}, {args.per_zone} cases a zone, load average {os.getloadavg()[0]:.2f}"
    )
    for difference in differences:
        print(f"- {difference}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
