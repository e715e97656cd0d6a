"""Tests for core/taskfile.py: reading valid task files, and reading back what is written.

Malformed files are in test_taskfile_errors.py; splitting in test_frontmatter.py; warnings
in test_lint.py; rendering and round-trip edits in test_taskedit.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.task import (
    MIB,
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    SandboxSpec,
    Task,
    WebhookTrigger,
)
from daycare_cli.core.taskedit import render_task
from daycare_cli.core.taskfile import ALIASES, KEYS, parse_task

EXAMPLES = Path(__file__).resolve().parents[2] / "tasks.example"


def parse(text: str | bytes, path: str = "tasks/demo.md") -> Task:
    return parse_task(text, path=path)


# ----------------------------------------------------------------------------- valid files

FULL = """\
---
name: Error monitor
description: Counts recent errors.
schedule: "*/15 * * * *"
timezone: Europe/Berlin
triggers:
  - cron: "0 9 * * MON-FRI"
    timezone: America/New_York
  - every: 90s
  - webhook: true
  - webhook:
      signature: github
      secret: GH_SECRET
    id: push
  - at: 2026-11-24T12:00:00
enabled: false
execute: true
delete_after_run: true
model: gpt-4o-mini
system: Be brief.
timeout: 30s
run_timeout: 1h
overlap: queue
catch_up: all
catch_up_window: 6h
retries: 3
retry_delay: 2m
jitter: 10
sandbox:
  network: true
  read: [/var/log, ~/notes]
  write:
    - /tmp/out
  memory: 1G
  cpu: 30
env:
  API_URL: https://example.com/api
  PORT: 8080
  DEBUG: true
notify: ["mailto://me@example.com", ops]
notify_on: [failure, recovery]
tags: [ops, daily]
---
<run_python>
print("hi")
</run_python>

Summarise.
"""


def test_full_file() -> None:
    task = parse(FULL)
    berlin = ZoneInfo("Europe/Berlin")
    assert task == Task(
        id="demo",
        name="Error monitor",
        body='<run_python>\nprint("hi")\n</run_python>\n\nSummarise.\n',
        description="Counts recent errors.",
        timezone="Europe/Berlin",
        triggers=(
            CronTrigger("*/15 * * * *", id="cron", source="*/15 * * * *"),
            CronTrigger(
                "0 9 * * MON-FRI",
                id="cron-2",
                timezone="America/New_York",
                source="0 9 * * MON-FRI",
            ),
            EveryTrigger(90.0, id="every"),
            WebhookTrigger(id="webhook"),
            WebhookTrigger(id="push", signature="github", secret="GH_SECRET"),
            AtTrigger(datetime(2026, 11, 24, 12, tzinfo=berlin), id="at"),
        ),
        enabled=False,
        delete_after_run=True,
        execute=True,
        model="gpt-4o-mini",
        system="Be brief.",
        timeout=30.0,
        run_timeout=3600.0,
        overlap="queue",
        catch_up="all",
        catch_up_window=21600.0,
        retries=3,
        retry_delay=120.0,
        jitter=10.0,
        sandbox=SandboxSpec(
            network=True,
            read=("/var/log", "~/notes"),
            write=("/tmp/out",),
            memory=1024 * MIB,
            cpu=30.0,
        ),
        env={"API_URL": "https://example.com/api", "PORT": "8080", "DEBUG": "true"},
        notify=("mailto://me@example.com", "ops"),
        notify_on=("failure", "recovery"),
        tags=("ops", "daily"),
        path="tasks/demo.md",
        body_line=44,
    )
    assert task.body.splitlines()[0] == FULL.splitlines()[task.body_line - 1]


def test_defaults() -> None:
    task = parse("---\nname: Hello\n---\nSay hello.\n")
    assert task == Task(
        id="demo", name="Hello", body="Say hello.\n", path="tasks/demo.md", body_line=4
    )
    assert (task.timeout, task.run_timeout, task.overlap, task.catch_up) == (
        60.0,
        900.0,
        "skip",
        "latest",
    )
    assert task.notify_on == ("response", "failure")
    assert task.sandbox == SandboxSpec(network=False, memory=512 * MIB)


def test_empty_values_mean_the_default() -> None:
    text = "---\nname:\ndescription:\nschedule:\ntimeout: ~\nsandbox:\n  memory:\nenv:\n---\nx\n"
    task = parse(text)
    assert task == Task(id="demo", name="demo", body="x\n", path="tasks/demo.md", body_line=10)


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("deleteAfterRun: true", "delete_after_run", True),
        ("once: true", "delete_after_run", True),
        ("delete_after_run: true", "delete_after_run", True),
        ("catchUp: all", "catch_up", "all"),
        ("catchUpWindow: 2h", "catch_up_window", 7200.0),
        ("notifyOn: [skip, success]", "notify_on", ("skip", "success")),
        ("runTimeout: 5m", "run_timeout", 300.0),
        ("retryDelay: 1m", "retry_delay", 60.0),
        ("notify_on: [failure, failure]", "notify_on", ("failure",)),
        ("notify_on: []", "notify_on", ()),
        ("model: none", "model", "none"),
        ("timeout: 1h30m", "timeout", 5400.0),
        ("timeout: 2.5", "timeout", 2.5),
        ("jitter: 0", "jitter", 0.0),
        ("retries: 0", "retries", 0),
        ("tags: []", "tags", ()),
        ("name: 2026-01-01", "name", "2026-01-01"),  # a YAML 1.1 date reads as its text
        ("name: !!str yes", "name", "yes"),  # an explicit tag is not ambiguous
        ("name: 'yes'", "name", "yes"),
        ('name: "9:30"', "name", "9:30"),
        ("name: Café ☕", "name", "Café ☕"),
        ("description: |\n  two\n  lines", "description", "two\nlines\n"),
        ("overlap: replace", "overlap", "replace"),
        ("catch_up: skip", "catch_up", "skip"),
        ("enabled: True", "enabled", True),
        ("enabled: FALSE", "enabled", False),
        ("sandbox: {memory: 268435456}", "sandbox", SandboxSpec(memory=256 * MIB)),
        ("sandbox: {memory: 256MiB}", "sandbox", SandboxSpec(memory=256 * MIB)),
        ("sandbox: {memory: 2g}", "sandbox", SandboxSpec(memory=2048 * MIB)),
        ("sandbox: {cpu: 1m}", "sandbox", SandboxSpec(cpu=60.0)),
        ("sandbox: {}", "sandbox", SandboxSpec()),
        ("sandbox: {disk: 1G}", "sandbox", SandboxSpec(disk=1024 * MIB)),
        ("sandbox: {disk: 0}", "sandbox", SandboxSpec(disk=0)),
        (
            "sandbox: {read: [/var/log, ~/notes, '~']}",
            "sandbox",
            SandboxSpec(read=("/var/log", "~/notes", "~")),
        ),
        ("env: {EMPTY: ''}", "env", {"EMPTY": ""}),
        ("env: {SECRET: '${secret:API}'}", "env", {"SECRET": "${secret:API}"}),
        ("env: {HEX: 0x1F}", "env", {"HEX": "0x1F"}),
        ("timezone: UTC", "timezone", "UTC"),
    ],
)
def test_single_keys(line: str, field: str, value: Any) -> None:
    task = parse(f"---\n{line}\n---\nbody\n")
    assert getattr(task, field) == value


def test_every_alias_is_camel_case_of_a_key() -> None:
    expected = {"deleteAfterRun", "runTimeout", "catchUp", "catchUpWindow", "retryDelay"}
    assert expected | {"notifyOn", "once"} <= set(ALIASES)
    assert set(ALIASES.values()) == set(KEYS)


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("frontmatter", "triggers"),
    [
        ('schedule: "0 9 * * *"', (CronTrigger("0 9 * * *", source="0 9 * * *"),)),
        ("schedule: 0 9 * * 1-5", (CronTrigger("0 9 * * 1-5", source="0 9 * * 1-5"),)),
        ('schedule: "@daily"', (CronTrigger("0 0 * * *", source="@daily"),)),
        ('schedule: "@reboot"', (CronTrigger("@reboot", source="@reboot"),)),
        (
            'schedule: "0 9 * * *"\ntriggers: [{cron: "0 17 * * *"}, {cron: "0 12 * * *"}]',
            (
                CronTrigger("0 9 * * *", id="cron", source="0 9 * * *"),
                CronTrigger("0 17 * * *", id="cron-2", source="0 17 * * *"),
                CronTrigger("0 12 * * *", id="cron-3", source="0 12 * * *"),
            ),
        ),
        (
            # the schedule comes first even when written after the list
            'triggers: [{every: 1m}]\nschedule: "0 9 * * *"',
            (CronTrigger("0 9 * * *", source="0 9 * * *"), EveryTrigger(60.0)),
        ),
        (
            # an explicit id takes precedence; unnamed triggers go around it
            'triggers: [{every: 1s}, {every: 2m, id: every}, {cron: "0 1 * * *", id: night}]',
            (
                EveryTrigger(1.0, id="every-2"),
                EveryTrigger(120.0, id="every"),
                CronTrigger("0 1 * * *", id="night", source="0 1 * * *"),
            ),
        ),
        ("triggers: [{webhook: {}}]", (WebhookTrigger(),)),
        ("triggers:\n  - webhook:", (WebhookTrigger(),)),
        (
            "triggers: [{webhook: {signature: hmac-sha256, secret: HOOK}, id: hook}]",
            (WebhookTrigger(id="hook", signature="hmac-sha256", secret="HOOK"),),
        ),
        # `at`: naive times take the trigger's zone, else the task's, else stay naive
        # (the default zone, resolved when the schedule is evaluated)
        (
            'triggers: [{at: "2026-11-24T12:00"}]',
            (AtTrigger(datetime(2026, 11, 24, 12)),),
        ),
        (
            'timezone: Europe/Berlin\ntriggers: [{at: "2026-11-24T12:00"}]',
            (AtTrigger(datetime(2026, 11, 24, 12, tzinfo=BERLIN)),),
        ),
        (
            'timezone: UTC\ntriggers: [{at: "2026-07-01 08:30", timezone: Europe/Berlin}]',
            (AtTrigger(datetime(2026, 7, 1, 8, 30, tzinfo=BERLIN), timezone="Europe/Berlin"),),
        ),
        (
            "triggers: [{at: 2026-11-24 12:00:00+02:00}]",  # a YAML timestamp with an offset
            (AtTrigger(datetime(2026, 11, 24, 12, tzinfo=timezone(timedelta(hours=2)))),),
        ),
        (
            'timezone: Europe/Berlin\ntriggers: [{at: "2026-11-24T12:00Z"}]',  # offset wins
            (AtTrigger(datetime(2026, 11, 24, 12, tzinfo=UTC)),),
        ),
        ("triggers: []", ()),
        ("triggers:", ()),
    ],
)
def test_triggers(frontmatter: str, triggers: tuple[object, ...]) -> None:
    task = parse(f"---\n{frontmatter}\n---\nbody\n")
    assert task.triggers == triggers
    if triggers and isinstance(triggers[0], AtTrigger):
        assert task.triggers[0].at == triggers[0].at  # type: ignore[union-attr]
        assert task.once


def test_at_instants_are_aware() -> None:
    task = parse('---\ntimezone: Europe/Berlin\ntriggers: [{at: "2026-11-24T12:00"}]\n---\nx\n')
    trigger = task.triggers[0]
    assert isinstance(trigger, AtTrigger)
    assert trigger.at.astimezone(UTC) == datetime(2026, 11, 24, 11, tzinfo=UTC)


def test_a_file_without_frontmatter_is_refused_at_line_1() -> None:
    # A note or README in the tasks directory must not become a task run by hand.
    text = "Remind me to stretch.\n---\nmore\n"
    with pytest.raises(TaskFileError) as caught:
        parse(text, path="/home/me/tasks/stretch.md")
    err = caught.value
    assert (err.line, err.col, err.excerpt) == (1, 1, "Remind me to stretch.")
    assert "no frontmatter" in err.message and err.hint and "name: My task" in err.hint


def test_empty_frontmatter_is_a_task_without_triggers() -> None:
    text = "---\n---\nRemind me to stretch.\n"
    task = parse(text, path="/home/me/tasks/stretch.md")
    assert (task.id, task.name, task.triggers, task.body, task.body_line) == (
        "stretch",
        "stretch",
        (),
        "Remind me to stretch.\n",
        3,
    )


def test_bom_is_stripped_and_lines_still_count() -> None:
    task = parse("\ufeff---\nname: BOM\n---\nbody\n".encode())
    assert (task.name, task.body, task.body_line) == ("BOM", "body\n", 4)


def test_crlf_body_is_normalised() -> None:
    task = parse(b"---\r\nname: Win\r\ntags: [a]\r\n---\r\nline 1\r\nline 2\r\n")
    assert (task.name, task.tags, task.body, task.body_line) == (
        "Win",
        ("a",),
        "line 1\nline 2\n",
        5,
    )


def test_dots_terminator_and_dashes_in_body() -> None:
    text = "---\nname: Dots\n...\nIntro\n---\nnot: frontmatter\n---\nEnd\n"
    task = parse(text)
    assert task.name == "Dots"
    assert task.body == "Intro\n---\nnot: frontmatter\n---\nEnd\n"
    assert task.body_line == 4


def test_task_id_argument_wins_over_the_file_name() -> None:
    task = parse_task("---\n---\nx", path="Some File.txt", task_id="some-file")
    assert (task.id, task.name, task.path) == ("some-file", "some-file", "Some File.txt")


def test_closed_blocks_and_nested_opening_tags_are_fine() -> None:
    body = "<run_python>\nx = '<run_python>'\n</run_python>\n<RUN_PYTHON t=5>1</run_python >\n"
    assert parse("---\n---\n" + body).body == body


def test_examples_parse() -> None:
    files = sorted(EXAMPLES.glob("*.md"))
    assert files, "tasks.example/ has no task files"
    for path in files:
        task = parse_task(path.read_bytes(), path=str(path))
        assert task.id == path.stem
        assert task.triggers


# ----------------------------------------------------------------------------- round trip


def test_render_task_round_trips_through_parse() -> None:
    original = parse(FULL)
    fields: dict[str, Any] = {
        "name": original.name,
        "description": original.description,
        "timezone": original.timezone,
        "triggers": list(original.triggers),
        "enabled": original.enabled,
        "execute": original.execute,
        "delete_after_run": original.delete_after_run,
        "model": original.model,
        "system": "two\nlines\n",
        "timeout": "30s",
        "run_timeout": "1h",
        "overlap": original.overlap,
        "catch_up": original.catch_up,
        "catch_up_window": "6h",
        "retries": original.retries,
        "retry_delay": "2m",
        "jitter": 10,
        "sandbox": {"network": True, "read": ["/var/log", "~/notes"], "write": ["/tmp/out"]},
        "env": original.env,
        "notify": list(original.notify),
        "notify_on": list(original.notify_on),
        "tags": list(original.tags),
    }
    fields["sandbox"].update(memory="1G", cpu=30)
    again = parse(render_task(fields, original.body))
    assert again.triggers == original.triggers
    assert again.system == "two\nlines\n"
    for name in ("timeout", "run_timeout", "catch_up_window", "retry_delay", "jitter", "env"):
        assert getattr(again, name) == getattr(original, name)
    assert (again.sandbox, again.notify, again.notify_on, again.tags, again.body) == (
        original.sandbox,
        original.notify,
        original.notify_on,
        original.tags,
        original.body,
    )


def test_sandbox_entries_keep_their_lines():
    text = (
        "---\nname: x\nsandbox:\n  read:\n    - /var/log\n    - ~/notes\n"
        "  write: [/srv/out]\n---\nx\n"
    )
    task = parse_task(text, path="tasks/x.md")
    assert task.sandbox.read_at == (5, 6)
    assert task.sandbox.write_at == (7,)
