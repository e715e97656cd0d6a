"""APScheduler's tests/triggers/test_cron.py, read by hand into the raw JSON of record.py.

APScheduler's CronTrigger takes keyword fields, not a crontab line, so each case keeps the
peer's spelling in `expr` and adds `as`: the same schedule as 5 cron fields, by
APScheduler's own rule (fields below the smallest one given default to their minimum,
the others to `*`; `last` is `L`, `4th wed` is `WED#4`, `last sun` is `0L`; its weekdays
count from Sunday as cron's do, as the test's reprs show). `as` is null when the
schedule needs a field cron has not got (year, week, second). APScheduler's `next()`
returns the first fire at or after the start (`inclusive`), and a trigger ANDs all
fields. The expected values are the test's literals.

    python apscheduler.py > apscheduler_raw.json
"""

from __future__ import annotations

import json
from typing import Any

BER = "Europe/Berlin"
EST = "US/Eastern"
T = "test_cron.py::"


def fires(*values: str, zone: str = BER) -> list[dict[str, Any]]:
    return [
        {"at": [i], "op": "==", "value": {"datetime": v, "zone": zone}}
        for i, v in enumerate(values)
    ]


def case(
    test: str,
    expr: str,
    as5: str | None,
    start: str | None,
    zone: str | None,
    checks: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "test": T + test,
        "kind": "iterate",
        "expr": expr,
        "as": as5,
        "start": None if start is None else {"datetime": start, "zone": zone},
        "options": {"inclusive": True},
        "checks": checks,
        **extra,
    }


def error(test: str, expr: str, as5: str | None) -> dict[str, Any]:
    return case(test, expr, as5, None, None, [], error=True)


def none_after(index: int) -> dict[str, Any]:
    return {"at": [index], "op": "exhausted", "value": True}


CASES = [
    error("test_invalid_expression", "CronTrigger(year='2009-fault')", None),
    error("test_invalid_step", "CronTrigger(year='2009/0')", None),
    error("test_invalid_range", "CronTrigger(year='2009-2008')", None),
    error("test_invalid_month_name[start]", "CronTrigger(month='fab')", "0 0 1 fab *"),
    error("test_invalid_month_name[end]", "CronTrigger(month='jan-fab')", "0 0 1 jan-fab *"),
    error("test_invalid_weekday_name[start]", "CronTrigger(day_of_week='web')", "0 0 * * web"),
    error(
        "test_invalid_weekday_name[end]", "CronTrigger(day_of_week='mon-web')", "0 0 * * mon-web"
    ),
    error("test_invalid_weekday_position_name", "CronTrigger(day='1st web')", "0 0 * * web#1"),
    error("test_invalid_ranges[too_large_step_all]", "CronTrigger(day='*/31')", "0 0 */31 * *"),
    error("test_invalid_ranges[too_large_step_range]", "CronTrigger(day='4-6/3')", "0 0 4-6/3 * *"),
    error("test_invalid_ranges[too_high_last]", "CronTrigger(hour='0-24')", "0 0-24 * * *"),
    error("test_invalid_ranges[too_low_first]", "CronTrigger(day='0-3')", "0 0 0-3 * *"),
    case(
        "test_cron_trigger_1",
        "CronTrigger(year='2009/2', month='1-4/3', day='5-6')",
        None,
        "2008-12-01T00:00:00",
        BER,
        fires(
            "2009-01-05T00:00:00",
            "2009-01-06T00:00:00",
            "2009-04-05T00:00:00",
            "2009-04-06T00:00:00",
            "2011-01-05T00:00:00",
        ),
    ),
    case(
        "test_cron_trigger_2",
        "CronTrigger(year='2009/2', month='1-3', day='5')",
        None,
        "2009-10-14T00:00:00",
        BER,
        fires(
            "2011-01-05T00:00:00",
            "2011-02-05T00:00:00",
            "2011-03-05T00:00:00",
            "2013-01-05T00:00:00",
        ),
    ),
    case(
        "test_cron_trigger_3",
        "CronTrigger(year='2009', month='feb-dec', hour='8-9')",
        "0 8-9 * feb-dec *",
        "2009-01-01T00:00:00",
        BER,
        fires("2009-02-01T08:00:00", "2009-02-01T09:00:00", "2009-02-02T08:00:00"),
    ),
    case(
        "test_cron_trigger_4",
        "CronTrigger(year='2012', month='2', day='last')",
        "0 0 L 2 *",
        "2012-02-01T00:00:00",
        BER,
        fires("2012-02-29T00:00:00"),
    ),
    case(
        "test_weekday_overlap[numeric]",
        "CronTrigger(year=2009, month=1, day='6-10', day_of_week='3-5')",
        "0 0 6-10 1 3-5",
        "2009-01-01T00:00:00",
        BER,
        fires("2009-01-07T00:00:00"),
    ),
    case(
        "test_weekday_overlap[text]",
        "CronTrigger(year=2009, month=1, day='6-10', day_of_week='wed-fri')",
        "0 0 6-10 1 wed-fri",
        "2009-01-01T00:00:00",
        BER,
        fires("2009-01-07T00:00:00"),
    ),
    case(
        "test_weekday_range",
        "CronTrigger(year=2020, month=1, week=1, day_of_week='fri-sun')",
        None,
        "2020-01-01T00:00:00",
        BER,
        [
            *fires("2020-01-03T00:00:00", "2020-01-04T00:00:00", "2020-01-05T00:00:00"),
            none_after(3),
        ],
    ),
    case(
        "test_last_weekday",
        "CronTrigger(year=2020, day='last sun')",
        "0 0 * * 0L",
        "2020-01-01T00:00:00",
        BER,
        fires("2020-01-26T00:00:00", "2020-02-23T00:00:00", "2020-03-29T00:00:00"),
    ),
    case(
        "test_increment_weekday",
        "CronTrigger(hour='5-6')",
        "0 5-6 * * *",
        "2009-09-25T07:00:00",
        BER,
        fires("2009-09-26T05:00:00"),
    ),
    case(
        "test_month_rollover",
        "CronTrigger(day=30)",
        "0 0 30 * *",
        "2016-02-01T00:00:00",
        BER,
        fires("2016-03-30T00:00:00", "2016-04-30T00:00:00"),
    ),
    case(
        "test_weekday_nomatch[numeric]",
        "CronTrigger(year=2009, month=1, day='6-10', day_of_week='1,0')",
        "0 0 6-10 1 1,0",
        "2009-01-01T00:00:00",
        BER,
        [none_after(0)],
    ),
    case(
        "test_weekday_nomatch[text]",
        "CronTrigger(year=2009, month=1, day='6-10', day_of_week='mon,sun')",
        "0 0 6-10 1 mon,sun",
        "2009-01-01T00:00:00",
        BER,
        [none_after(0)],
    ),
    case(
        "test_weekday_positional",
        "CronTrigger(year=2009, month=1, day='4th wed')",
        "0 0 * 1 wed#4",
        "2009-01-01T00:00:00",
        BER,
        fires("2009-01-28T00:00:00"),
    ),
    case(
        "test_end_time",
        "CronTrigger(hour=4, end_time=...)",
        "0 4 * * *",
        "2014-04-13T02:00:00",
        BER,
        fires("2014-04-13T04:00:00"),
    ),
    case(
        "test_week_1",
        "CronTrigger(year=2009, month=2, week=8)",
        None,
        "2009-01-01T00:00:00",
        BER,
        fires(*(f"2009-02-{day}T00:00:00" for day in range(16, 23))),
    ),
    case(
        "test_week_2[numeric]",
        "CronTrigger(year=2009, week=15, day_of_week=3)",
        None,
        "2009-01-01T00:00:00",
        BER,
        [*fires("2009-04-08T00:00:00"), none_after(1)],
    ),
    case(
        "test_dst_change[spring_skip_hour]",
        "CronTrigger(hour=2)",
        "0 2 * * *",
        "2013-03-09T20:00:00",
        EST,
        fires("2013-03-11T02:00:00", zone=EST),
    ),
    case(
        "test_dst_change[absolute_spring]",
        "CronTrigger(hour=8)",
        "0 8 * * *",
        "2013-03-09T12:00:00",
        EST,
        fires("2013-03-10T08:00:00", zone=EST),
    ),
    case(
        "test_dst_change[absolute_autumn]",
        "CronTrigger(hour=8)",
        "0 8 * * *",
        "2013-11-02T12:00:00",
        EST,
        fires("2013-11-03T08:00:00", zone=EST),
    ),
    case(
        "test_dst_change[interval_spring]",
        "CronTrigger(minute='*/30')",
        "*/30 * * * *",
        "2013-03-10T01:35:00",
        EST,
        fires("2013-03-10T03:00:00", zone=EST),
    ),
    case(
        "test_dst_change[interval_autumn]",
        "CronTrigger(minute='*/30')",
        "*/30 * * * *",
        "2013-11-03T01:35:00",
        EST,
        [
            {
                "at": [0],
                "op": "==",
                "value": {"datetime": "2013-11-03T01:00:00", "zone": EST, "fold": 1},
            }
        ],
    ),
    case(
        "test_dst_change2[dst_change_0]",
        "CronTrigger(minute=0)",
        "0 * * * *",
        "2024-10-27T02:00:00",
        BER,
        [
            {"at": [i], "op": "==", "value": {"datetime": d, "zone": BER, "fold": f}}
            for i, (d, f) in enumerate(
                [("2024-10-27T02:00:00", 0), ("2024-10-27T02:00:00", 1), ("2024-10-27T03:00:00", 0)]
            )
        ],
    ),
    case(
        "test_dst_change2[dst_change_1]",
        "CronTrigger(minute=1)",
        "1 * * * *",
        "2024-10-27T02:01:00",
        BER,
        [
            {"at": [i], "op": "==", "value": {"datetime": d, "zone": BER, "fold": f}}
            for i, (d, f) in enumerate(
                [("2024-10-27T02:01:00", 0), ("2024-10-27T02:01:00", 1), ("2024-10-27T03:01:00", 0)]
            )
        ],
    ),
    case(
        "test_year_list",
        "CronTrigger(year='2009,2008')",
        None,
        "2009-01-01T00:00:00",
        BER,
        [*fires("2009-01-01T00:00:00"), none_after(1)],
    ),
    case(
        "test_aware_start_time_timezone_conversion",
        "CronTrigger(hour=11, minute='*/5', timezone=New_York), start in Chicago",
        "*/5 11 * * *",
        "2009-09-26T10:16:00",
        "America/Chicago",
        fires("2009-09-26T11:20:00", zone="America/New_York"),
        evaluate_in="America/New_York",
    ),
]

# CronTrigger.from_crontab: crontab lines it accepts (test_from_crontab) or refuses.
for test_id, line in [
    ("always", "* * * * *"),
    ("assorted", "0-14 * 14-28 jul fri"),
    ("multiple_spaces_in_format", " 0-14   * 14-28   jul       fri"),
    ("working_week", "* * * * 1-5"),
    ("sunday_first", "* * * * 0-3"),
    ("saturday_first", "* * * * 6-1"),
    ("weekend", "* * * * 6-7"),
]:
    CASES.append(
        {
            "test": f"{T}test_from_crontab[{test_id}]",
            "kind": "valid",
            "expr": line,
            "options": {},
            "checks": [{"at": ["valid"], "op": "truth", "value": True}],
        }
    )
CASES.append(
    {
        "test": f"{T}test_from_crontab_wrong_number_of_fields",
        "kind": "valid",
        "expr": "*",
        "options": {},
        "checks": [{"at": ["valid"], "op": "truth", "value": False}],
    }
)

if __name__ == "__main__":
    print(json.dumps({"cases": CASES, "skipped": []}, indent=1))
