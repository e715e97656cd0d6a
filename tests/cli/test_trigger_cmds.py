"""`daycare task trigger add|rm`: shorthand <-> list conversion, files stay valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHORTHAND = '---\nname: News\nschedule: "0 9 * * *"\ntimezone: Europe/Berlin\n---\nNews.\n'


def triggers(run, task_id: str) -> list[tuple[str, str, str]]:
    record = json.loads(run("task", "show", task_id, "--json").stdout)
    return [(t["id"], t["type"], t["spec"]) for t in record["triggers"]]


@pytest.mark.parametrize(
    ("args", "expected", "line"),
    [
        (["--webhook"], ("webhook", "webhook", "webhook"), "  - webhook: true\n"),
        (["--every", "1h"], ("every", "every", "1h"), "  - every: 1h\n"),
        (
            ["--cron", "0 18 * * *", "--tz", "America/New_York"],
            ("cron-2", "cron", "0 18 * * *"),
            '  - cron: "0 18 * * *"\n    timezone: America/New_York\n',
        ),
        (
            ["--at", "2030-01-02T03:04", "--trigger-id", "once"],
            ("once", "at", "2030-01-02T03:04:00+01:00"),
            "  - id: once\n",
        ),
        (
            ["--webhook", "--signature", "github", "--secret", "gh"],
            ("webhook", "webhook", "webhook"),
            "signature: github",
        ),
    ],
)
def test_add_turns_the_shorthand_into_a_list(
    run, write, args: list[str], expected: tuple[str, str, str], line: str
) -> None:
    path = write("news", SHORTHAND)
    result = run("task", "trigger", "add", "news", *args)
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "schedule:" not in text
    assert 'triggers:\n  - cron: "0 9 * * *"\n' in text
    assert line in text
    assert triggers(run, "news") == [("cron", "cron", "0 9 * * *"), expected]


def test_add_a_cron_to_a_manual_task_uses_the_shorthand(run, write) -> None:
    path = write("manual", "---\nname: Manual\n---\nHi.\n")
    assert run("task", "trigger", "add", "manual", "--cron", "0 7 * * *").exit_code == 0
    assert path.read_text() == '---\nname: Manual\nschedule: "0 7 * * *"\n---\nHi.\n'


def test_rm_of_the_shorthand_removes_one_line(run, write) -> None:
    path = write("news", SHORTHAND)
    result = run("task", "trigger", "rm", "news", "cron")
    assert result.exit_code == 0, result.output
    assert path.read_text() == "---\nname: News\ntimezone: Europe/Berlin\n---\nNews.\n"
    assert triggers(run, "news") == []


def test_rm_from_a_list_keeps_the_rest_and_the_last_leaves_a_manual_task(run, write) -> None:
    write("news", SHORTHAND)
    run("task", "trigger", "add", "news", "--webhook")
    run("task", "trigger", "add", "news", "--every", "30m")
    assert run("task", "trigger", "rm", "news", "webhook").exit_code == 0
    assert triggers(run, "news") == [("cron", "cron", "0 9 * * *"), ("every", "every", "30m")]
    assert run("task", "trigger", "rm", "news", "cron").exit_code == 0
    assert run("task", "trigger", "rm", "news", "every").exit_code == 0
    assert triggers(run, "news") == []
    assert run("task", "lint", "news").exit_code == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "news"], 2, "exactly one of"),
        (["add", "news", "--cron", "0 1 * * *", "--webhook"], 2, "exactly one of"),
        (["add", "news", "--every", "1h", "--tz", "UTC"], 2, "--tz only goes with"),
        (["add", "news", "--signature", "github", "--webhook"], 2, "go together"),
        (["add", "news", "--webhook", "--trigger-id", "cron"], 2, "already has a trigger"),
        (["add", "news", "--cron", "61 * * * *"], 2, "minute"),
        (["add", "nope", "--webhook"], 3, "no task 'nope'"),
        (["rm", "news", "nope"], 3, "its triggers: cron"),
    ],
)
def test_bad_trigger_commands(
    run, write, no_traceback, args: list[str], code: int, message: str
) -> None:
    path = write("news", SHORTHAND)
    result = run("task", "trigger", *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert no_traceback(result)
    assert path.read_text() == SHORTHAND


def test_trigger_commands_refuse_an_invalid_file(run, write) -> None:
    path: Path = write("bad", "---\nname: Bad\nschedule: */5 * * * *\n---\nx\n")
    result = run("task", "trigger", "add", "bad", "--webhook")
    assert result.exit_code == 4 and "must be quoted" in result.stderr
    assert "schedule: */5" in path.read_text()
