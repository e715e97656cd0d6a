"""Tests for core/taskchange.py: what `task create/update` options mean for a task file.

Each planner is tested on plain values; `apply_change` end to end with real text and the
one reader. The CLI's tests (tests/cli/test_task_cmds.py) show the same through commands.
"""

from __future__ import annotations

from typing import Any

import pytest

from daycare_cli.core.errors import ScheduleError, TaskFileError, UsageError, UserError
from daycare_cli.core.task import CronTrigger, WebhookTrigger
from daycare_cli.core.taskchange import (
    Change,
    apply_change,
    frontmatter_data,
    new_task_fields,
    parse_assignment,
    plan_time_trigger,
    trigger_mapping,
)

# ----------------------------------------------------------------------------- Change


def test_an_empty_change_is_false() -> None:
    assert not Change()
    assert Change(set_keys={"name": "x"})
    assert Change(unset=["tags"])
    assert Change(body="")  # an empty body is still a change


# ----------------------------------------------------------------------------- parse_assignment


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("retries=3", ("retries", 3)),
        ("tags=[a, b]", ("tags", ["a", "b"])),
        ("name=Hello", ("name", "Hello")),
        (" name = Hello world ", ("name", "Hello world")),
        ("name=", ("name", "")),
        ("name=  ", ("name", "")),
        ("enabled=false", ("enabled", False)),
        ("model=~", ("model", None)),
        ("sandbox={network: true}", ("sandbox", {"network": True})),
        ("description=a=b", ("description", "a=b")),  # only the first `=` splits
        ('name="yes"', ("name", "yes")),
    ],
)
def test_parse_assignment(item: str, expected: tuple[str, Any]) -> None:
    assert parse_assignment(item) == expected


@pytest.mark.parametrize(
    ("item", "message", "hint"),
    [
        ("retries", "--set wants KEY=VALUE, not 'retries'", "--set retries=3"),
        ("=3", "--set wants KEY=VALUE", "--set retries=3"),
        ("  =3", "--set wants KEY=VALUE", "--set retries=3"),
        ("name=[a", "the value of --set name is not valid YAML", "--set 'name=\"[a\"'"),
        ("x=a: b: c", "the value of --set x is not valid YAML", "quote it"),
    ],
)
def test_parse_assignment_errors(item: str, message: str, hint: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_assignment(item)
    assert message in info.value.message
    assert hint in (info.value.hint or "")


# ----------------------------------------------------------------------------- trigger_mapping


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"cron": "0 9 * * *"}, {"cron": "0 9 * * *"}),
        ({"cron": "@daily", "timezone": "UTC"}, {"cron": "@daily", "timezone": "UTC"}),
        ({"at": "2026-11-24T12:00"}, {"at": "2026-11-24T12:00"}),
        ({"every": "15m", "trigger_id": "often"}, {"id": "often", "every": "15m"}),
        ({"webhook": True}, {"webhook": True}),
        (
            {"webhook": True, "signature": "github", "secret": "gh"},
            {"webhook": {"signature": "github", "secret": "gh"}},
        ),
    ],
)
def test_trigger_mapping(options: dict[str, Any], expected: dict[str, Any]) -> None:
    assert trigger_mapping(**options) == expected


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({}, UsageError, "give exactly one of --cron, --at, --every, --webhook"),
        ({"cron": "0 9 * * *", "every": "1h"}, UsageError, "give exactly one"),
        ({"every": "1h", "signature": "github"}, UsageError, "only go with --webhook"),
        ({"every": "1h", "timezone": "UTC"}, UsageError, "--tz only goes with --cron or --at"),
        ({"webhook": True, "timezone": "UTC"}, UsageError, "--tz only goes with"),
        ({"webhook": True, "signature": "github"}, UsageError, "go together"),
        ({"webhook": True, "secret": "gh"}, UsageError, "go together"),
        ({"cron": "0 9 * *"}, ScheduleError, "5 fields"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Base"}, ScheduleError, "Mars/Base"),
        ({"at": "tomorrow"}, UsageError, "--at wants an ISO 8601 date and time"),
        ({"every": "soon"}, UsageError, ""),
        ({"every": "0s"}, UsageError, "--every must be at least 1s"),
    ],
)
def test_trigger_mapping_errors(
    options: dict[str, Any], error: type[UserError], message: str
) -> None:
    with pytest.raises(error) as info:
        trigger_mapping(**options)
    assert message in info.value.message


# ----------------------------------------------------------------------------- new_task_fields


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"name": "N"}),
        ({"schedule": "0 9 * * *"}, {"name": "N", "schedule": "0 9 * * *"}),
        ({"every": "1h"}, {"name": "N", "triggers": [{"every": "1h"}]}),
        (
            {"schedule": "0 9 * * *", "webhook": True},
            {"name": "N", "triggers": [{"cron": "0 9 * * *"}, {"webhook": True}]},
        ),
        (
            {"at": "2026-11-24T12:00", "every": "2h", "timezone": "UTC"},
            {
                "name": "N",
                "triggers": [{"at": "2026-11-24T12:00"}, {"every": "2h"}],
                "timezone": "UTC",
            },
        ),
        (
            {"execute": True, "model": "none", "once": True},
            {"name": "N", "execute": True, "model": "none", "delete_after_run": True},
        ),
    ],
)
def test_new_task_fields(options: dict[str, Any], expected: dict[str, Any]) -> None:
    assert new_task_fields("N", **options) == expected


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"schedule": "61 * * * *"}, ScheduleError, "61"),
        ({"at": "noon"}, UsageError, "--at wants"),
        ({"every": "0.5s"}, UsageError, "--every must be at least 1s"),
        ({"timezone": "Europe/Nowhere"}, ScheduleError, "Europe/Nowhere"),
    ],
)
def test_new_task_fields_errors(
    options: dict[str, Any], error: type[UserError], message: str
) -> None:
    with pytest.raises(error) as info:
        new_task_fields("N", **options)
    assert message in info.value.message


# ----------------------------------------------------------------------------- plan_time_trigger

WEBHOOK = {"webhook": True}
BERLIN_CRON = {"cron": "0 9 * * *", "timezone": "Europe/Berlin"}

# (frontmatter data, options, keys set, keys unset)
PLANS: list[tuple[dict[str, Any], dict[str, str], dict[str, Any], list[str]]] = [
    # The shorthand stays the shorthand: one line changes.
    ({}, {"schedule": "0 10 * * *"}, {"schedule": "0 10 * * *"}, []),
    ({"schedule": "0 9 * * *"}, {"schedule": "0 10 * * *"}, {"schedule": "0 10 * * *"}, []),
    # Other kinds turn the shorthand into a list.
    ({"schedule": "0 9 * * *"}, {"every": "1h"}, {"triggers": [{"every": "1h"}]}, ["schedule"]),
    ({}, {"at": "2026-11-24T12:00"}, {"triggers": [{"at": "2026-11-24T12:00"}]}, []),
    # Webhooks are kept; time triggers are replaced.
    (
        {"triggers": [{"cron": "0 9 * * *"}, WEBHOOK, {"every": "5m"}]},
        {"every": "1h"},
        {"triggers": [WEBHOOK, {"every": "1h"}]},
        [],
    ),
    (
        {"schedule": "0 8 * * *", "triggers": [WEBHOOK]},
        {"schedule": "0 10 * * *"},
        {"triggers": [WEBHOOK, {"cron": "0 10 * * *"}]},
        ["schedule"],
    ),
    # Without webhooks to keep, a new cron goes back to the shorthand.
    (
        {"triggers": [{"every": "5m"}]},
        {"schedule": "0 10 * * *"},
        {"schedule": "0 10 * * *"},
        ["triggers"],
    ),
    # A replaced cron or at keeps the zone it named: a new time, same clock.
    (
        {"triggers": [BERLIN_CRON, WEBHOOK]},
        {"schedule": "0 10 * * *"},
        {"triggers": [WEBHOOK, {"cron": "0 10 * * *", "timezone": "Europe/Berlin"}]},
        [],
    ),
    (
        {"triggers": [{"at": "2026-01-01T09:00", "timezone": "Asia/Tokyo"}]},
        {"at": "2026-02-01T09:00"},
        {"triggers": [{"at": "2026-02-01T09:00", "timezone": "Asia/Tokyo"}]},
        [],
    ),
    # ...but only a trigger of the same kind lends its zone.
    (
        {"triggers": [BERLIN_CRON]},
        {"at": "2026-02-01T09:00"},
        {"triggers": [{"at": "2026-02-01T09:00"}]},
        [],
    ),
    # Malformed entries (hand-written junk) are dropped, not copied.
    (
        {"triggers": ["0 9 * * *", WEBHOOK]},
        {"every": "2h"},
        {"triggers": [WEBHOOK, {"every": "2h"}]},
        [],
    ),
]


@pytest.mark.parametrize(("raw", "options", "set_keys", "unset"), PLANS)
def test_plan_time_trigger(
    raw: dict[str, Any], options: dict[str, str], set_keys: dict[str, Any], unset: list[str]
) -> None:
    change = Change()
    plan_time_trigger(change, raw, **{"schedule": None, "at": None, "every": None, **options})
    assert (change.set_keys, change.unset) == (set_keys, unset)


def test_plan_time_trigger_without_options_plans_nothing() -> None:
    change = Change(set_keys={"name": "x"})
    plan_time_trigger(change, {"schedule": "0 9 * * *"}, schedule=None, at=None, every=None)
    assert change == Change(set_keys={"name": "x"})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"schedule": "0 9 * * *", "every": "1h"}, UsageError, "give one of --schedule, --at"),
        ({"at": "x", "every": "1h"}, UsageError, "give one of"),
        ({"schedule": "0 9 * *"}, ScheduleError, "5 fields"),
        ({"every": "0s"}, UsageError, "at least 1s"),
    ],
)
def test_plan_time_trigger_errors(
    options: dict[str, str], error: type[UserError], message: str
) -> None:
    change = Change()
    with pytest.raises(error) as info:
        plan_time_trigger(change, {}, **{"schedule": None, "at": None, "every": None, **options})
    assert message in info.value.message
    assert not change  # nothing half-planned


# ----------------------------------------------------------------------------- frontmatter_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nname: x\nretries: 2\n---\nbody\n", {"name": "x", "retries": 2}),
        ("---\nschedule: '0 9 * * *'\n---\n", {"schedule": "0 9 * * *"}),
        ("no frontmatter\n", {}),
        ("---\n---\nbody\n", {}),
        ("---\n- a list\n---\n", {}),
        ("---\nname: [unclosed\n---\n", {}),
    ],
)
def test_frontmatter_data(text: str, expected: dict[str, Any]) -> None:
    assert frontmatter_data(text, "t.md") == expected


# ----------------------------------------------------------------------------- apply_change

FILE = """\
---
name: Backup   # nightly
schedule: "0 2 * * *"
---
Back up the photos.
"""


def test_apply_change_edits_keys_and_body_and_validates() -> None:
    change = Change(set_keys={"retries": 2}, unset=["schedule"], body="Back up the music.")
    text, task = apply_change(FILE, change, path="tasks/backup.md", task_id="backup")
    assert text == "---\nname: Backup   # nightly\nretries: 2\n---\nBack up the music.\n"
    assert (task.id, task.name, task.retries, task.triggers) == ("backup", "Backup", 2, ())
    assert task.body == "Back up the music.\n"


def test_apply_change_without_changes_returns_the_same_text() -> None:
    text, task = apply_change(FILE, Change(), path="tasks/backup.md", task_id="backup")
    assert text == FILE
    assert task.triggers == (CronTrigger("0 2 * * *", source="0 2 * * *"),)


def test_apply_change_sets_triggers_from_plain_mappings() -> None:
    change = Change(set_keys={"triggers": [{"webhook": True}]}, unset=["schedule"])
    _, task = apply_change(FILE, change, path="tasks/backup.md", task_id="backup")
    assert task.triggers == (WebhookTrigger(),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (Change(set_keys={"retries": -1}), "`retries` must be a whole number"),
        (Change(set_keys={"colour": "red"}), "unknown key `colour`"),
        (Change(body="<run_python>\nprint(1)\n"), "unclosed <run_python> block"),
    ],
)
def test_apply_change_refuses_what_the_reader_refuses(change: Change, message: str) -> None:
    with pytest.raises(TaskFileError) as info:
        apply_change(FILE, change, path="tasks/backup.md", task_id="backup")
    assert message in info.value.message
    assert info.value.path == "tasks/backup.md"


def test_apply_change_refuses_a_file_that_is_not_text() -> None:
    with pytest.raises(TaskFileError) as info:
        apply_change(None, Change(set_keys={"enabled": False}), path="t/x.md", task_id="x")
    assert "not UTF-8 text" in info.value.message
    assert (info.value.path, info.value.hint) == ("t/x.md", "save it as UTF-8")
