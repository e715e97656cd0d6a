"""`daycare cron explain`: words, warning and fires, deterministic with --from."""

from __future__ import annotations

import json

import pytest


def test_explain_json_with_from_is_deterministic(run) -> None:
    result = run(
        "cron", "explain", "0 9 * * 1-5", "--tz", "Europe/Berlin",
        "--from", "2026-11-20T12:00", "-n", "3", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "expression": "0 9 * * 1-5",
        "normalized": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
        "description": "At 09:00 on Monday through Friday (Europe/Berlin)",
        "warning": None,
        "fires": [
            "2026-11-23T09:00:00+01:00",
            "2026-11-24T09:00:00+01:00",
            "2026-11-25T09:00:00+01:00",
        ],
        "fires_dst": [None, None, None],
    }


@pytest.mark.parametrize(
    ("start", "first"),
    [
        ("2026-11-20T07:30:00+00:00", "2026-11-20T09:00:00+01:00"),  # 08:30 local
        ("2026-11-20T08:00:00+01:00", "2026-11-20T09:00:00+01:00"),
        ("2026-11-20T09:00", "2026-11-23T09:00:00+01:00"),  # strictly after --from
    ],
)
def test_from_takes_offsets_and_naive_times_are_in_the_zone(run, start: str, first: str) -> None:
    result = run(
        "cron", "explain", "0 9 * * 1-5", "--tz", "Europe/Berlin", "--from", start, "--json"
    )
    assert json.loads(result.stdout)["fires"][0] == first


def test_explain_for_people_shows_words_warning_and_offsets(run) -> None:
    result = run(
        "cron", "explain", "*/2 * * * *", "--tz", "America/New_York",
        "--from", "2026-07-01T12:00", "-n", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(America/New_York)" in result.stdout
    assert "Wed 2026-07-01 12:02 -04:00" in result.stdout
    assert "Wed 2026-07-01 12:04 -04:00" in result.stdout
    assert "more often than every 5 minutes" in result.stderr


def test_explain_marks_fires_dst_moved_or_repeated(run) -> None:
    """Berlin: 02:30 does not exist on 2026-03-29 and happens twice on 2026-10-25."""
    spring = run(
        "cron", "explain", "30 2 * * *", "--tz", "Europe/Berlin",
        "--from", "2026-03-28T12:00", "-n", "2", "--json",
    )  # fmt: skip
    data = json.loads(spring.stdout)
    assert data["fires"] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert data["fires_dst"] == [
        "02:30 does not exist on 2026-03-29: runs at 03:00 +02:00",
        None,
    ]
    autumn = run(
        "cron", "explain", "*/30 2 * * *", "--tz", "Europe/Berlin",
        "--from", "2026-10-25T02:40+02:00", "-n", "3",
    )  # fmt: skip
    assert autumn.exit_code == 0, autumn.output
    lines = [line for line in autumn.stdout.splitlines() if "2026-10-25" in line]
    assert "02:00 +01:00" in lines[0] and "runs again at +01:00" in lines[0]
    assert "02:30 +01:00" in lines[1] and "02:30 happens twice on 2026-10-25" in lines[1]
    assert "2026-10-26" in autumn.stdout.splitlines()[-1]
    assert "happens twice" not in autumn.stdout.splitlines()[-1]


def test_macros_are_normalized(run) -> None:
    data = json.loads(run("cron", "explain", "@daily", "--tz", "UTC", "--json").stdout)
    assert data["expression"] == "@daily" and data["normalized"] == "0 0 * * *"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # Typed on the command line: usage errors (2), like a bad --from.
        (["*/15 * * * * *"], 2, "expected 5 fields"),
        (["0 0 31 2 *"], 2, "never fires"),
        (["0 9 * * *", "--tz", "Europe/Berln"], 2, "Europe/Berlin"),
        (["0 9 * * *", "--from", "next tuesday"], 2, "ISO 8601"),
        (["0 9 * * *", "-n", "-1"], 2, "--count"),
    ],
)
def test_bad_input_exits_with_its_code_and_no_traceback(
    run, no_traceback, args: list[str], code: int, message: str
) -> None:
    result = run("cron", "explain", *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert no_traceback(result)


def test_a_bad_field_is_pointed_at(run) -> None:
    result = run("cron", "explain", "0 25 * * *")
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert lines[1] == "  0 25 * * *"
    assert lines[2] == "    ^"
