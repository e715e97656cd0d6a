"""Tests for core/taskedit.py: rendering new files, and edits that change only their lines.

update_frontmatter: comments, order, quoting, blank lines, CRLF and a BOM must survive
byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.task import AtTrigger, CronTrigger, EveryTrigger, Task, WebhookTrigger
from daycare_cli.core.taskedit import (
    render_task,
    replace_body,
    trigger_to_dict,
    update_frontmatter,
    with_newlines,
)
from daycare_cli.core.taskfile import parse_task

BERLIN = ZoneInfo("Europe/Berlin")


def parse(text: str | bytes, path: str = "tasks/demo.md") -> Task:
    return parse_task(text, path=path)


HAND_WRITTEN = """\
---
# Morning checks — written by hand
name:    Error monitor      # shown in `task ls`
schedule: '*/15 * * * *'    # every quarter hour
timezone: Europe/Berlin

deleteAfterRun: false
execute: true
sandbox:
  network: false
  read:
    - /var/log   # app logs
  # more paths later

# notification settings
notify_on: [response,   failure]
tags:
- ops
- "daily"
---
<run_python>
print("hi")
</run_python>
---
A second `---` in the body.
"""


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def with_crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# (set_keys, unset, {0-based line index: new line or None for removed}) on HAND_WRITTEN
ONE_KEY_EDITS: list[tuple[dict[str, Any], tuple[str, ...], dict[int, str]]] = [
    ({"name": "Log watcher"}, (), {2: "name: Log watcher      # shown in `task ls`"}),
    ({"schedule": "0 9 * * 1-5"}, (), {3: 'schedule: "0 9 * * 1-5"    # every quarter hour'}),
    ({"timezone": "UTC"}, (), {4: "timezone: UTC"}),
    ({"delete_after_run": True}, (), {6: "deleteAfterRun: true"}),
    ({"once": True}, (), {6: "deleteAfterRun: true"}),
    ({"deleteAfterRun": True}, (), {6: "deleteAfterRun: true"}),
    ({"execute": False}, (), {7: "execute: false"}),
    ({"notify_on": ["failure"]}, (), {15: "notify_on: [failure]"}),
    ({"name": "yes"}, (), {2: 'name: "yes"      # shown in `task ls`'}),
    ({"name": "9:30 standup"}, (), {2: 'name: "9:30 standup"      # shown in `task ls`'}),
    ({"name": "9:30"}, (), {2: 'name: "9:30"      # shown in `task ls`'}),
    ({"name": "0755"}, (), {2: 'name: "0755"      # shown in `task ls`'}),
    ({"name": "Note: read this"}, (), {2: "name: 'Note: read this'      # shown in `task ls`"}),
]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize(("set_keys", "unset", "changed"), ONE_KEY_EDITS)
def test_one_key_edit_changes_only_its_line(
    set_keys: dict[str, Any], unset: tuple[str, ...], changed: dict[int, str], crlf: bool
) -> None:
    text = with_crlf(HAND_WRITTEN) if crlf else HAND_WRITTEN
    out = update_frontmatter(text, set_keys, unset)
    eol = "\r" if crlf else ""
    before, after = lines_of(text), lines_of(out)
    assert len(after) == len(before)
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        if index in changed:
            assert new == changed[index] + eol
        else:
            assert new == old
    parse_task(out, path="tasks/monitor.md")  # still a valid task file


def test_unchanged_value_leaves_the_file_identical() -> None:
    same = {"name": "Error monitor", "schedule": "*/15 * * * *", "tags": ["ops", "daily"]}
    assert update_frontmatter(HAND_WRITTEN, same) == HAND_WRITTEN
    assert update_frontmatter(HAND_WRITTEN, {}, ["model"]) == HAND_WRITTEN


def test_new_key_is_appended_at_the_end_of_the_frontmatter() -> None:
    out = update_frontmatter(HAND_WRITTEN, {"retries": 2, "run_timeout": "5m"})
    before = lines_of(HAND_WRITTEN)
    close = before.index("---", 1)
    assert lines_of(out) == [*before[:close], "retries: 2", "run_timeout: 5m", *before[close:]]
    task = parse_task(out, path="tasks/monitor.md")
    assert (task.retries, task.run_timeout) == (2, 300.0)


def test_unset_removes_the_nested_block_and_its_inner_comments() -> None:
    out = update_frontmatter(HAND_WRITTEN, {}, ["sandbox", "timezone"])
    before = lines_of(HAND_WRITTEN)
    removed = {4, 8, 9, 10, 11, 12}  # timezone, sandbox and its lines incl. "# more paths"
    assert lines_of(out) == [line for i, line in enumerate(before) if i not in removed]
    assert "# notification settings" in out  # a top-level comment belongs to the next key


def test_unset_the_last_key_with_a_same_indent_list() -> None:
    out = update_frontmatter(HAND_WRITTEN, {"tags": None})
    assert "- ops" not in out
    assert '"daily"' not in out
    assert out.split("---\n")[1].endswith("notify_on: [response,   failure]\n")


def test_replacing_a_block_with_a_new_block() -> None:
    out = update_frontmatter(HAND_WRITTEN, {"sandbox": {"network": True, "memory": "1G"}})
    before = lines_of(HAND_WRITTEN)
    new_block = ["sandbox:", "  network: true", "  memory: 1G"]
    assert lines_of(out) == [*before[:8], *new_block, *before[13:]]
    assert parse_task(out, path="t.md").sandbox.network is True


def test_crlf_and_bom_survive() -> None:
    text = "\ufeff" + with_crlf(HAND_WRITTEN)
    out = update_frontmatter(text, {"retries": 1, "name": "X"}, ["execute"])
    assert out.startswith("\ufeff---\r\n")
    assert "\n" not in out.replace("\r\n", "")
    assert "retries: 1\r\n---\r\n" in out
    assert out.count("\r\n") == text.count("\r\n")  # +1 retries, -1 execute


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("*/5 * * * *", 'schedule: "*/5 * * * *"'),
        ("0 9 * * *", 'schedule: "0 9 * * *"'),
        ("@daily", 'schedule: "@daily"'),
    ],
)
def test_cron_values_are_double_quoted(value: str, line: str) -> None:
    out = update_frontmatter("---\nname: x\n---\nbody\n", {"schedule": value})
    assert out == f"---\nname: x\n{line}\n---\nbody\n"
    assert parse_task(out, path="x.md").triggers[0].source == value


def test_triggers_list_is_written_in_block_style() -> None:
    triggers = [{"cron": "0 9 * * *", "timezone": "Europe/Berlin"}, {"every": "15m"}]
    out = update_frontmatter("---\nname: x\n---\n", {"triggers": triggers})
    assert out == (
        "---\nname: x\n"
        "triggers:\n"
        '  - cron: "0 9 * * *"\n'
        "    timezone: Europe/Berlin\n"
        "  - every: 15m\n"
        "---\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Just a prompt.\n", '---\nschedule: "0 9 * * *"\n---\nJust a prompt.\n'),
        ("", '---\nschedule: "0 9 * * *"\n---\n'),
        ("Line\r\nTwo\r\n", '---\r\nschedule: "0 9 * * *"\r\n---\r\nLine\r\nTwo\r\n'),
        ("\ufeffHi\n", '\ufeff---\nschedule: "0 9 * * *"\n---\nHi\n'),
        ("---\n---\nBody\n", '---\nschedule: "0 9 * * *"\n---\nBody\n'),
        ("---\n# note\n...\nBody\n", '---\n# note\nschedule: "0 9 * * *"\n...\nBody\n'),
    ],
)
def test_files_without_keys_get_frontmatter(text: str, expected: str) -> None:
    assert update_frontmatter(text, {"schedule": "0 9 * * *"}) == expected


def test_file_without_frontmatter_and_nothing_to_set_is_unchanged() -> None:
    assert update_frontmatter("Body\n", {}, ["name"]) == "Body\n"


def test_multiline_value_is_replaced_whole() -> None:
    text = "---\nsystem: |\n  one\n\n  two\nname: x\n---\n"
    out = update_frontmatter(text, {"system": "short"})
    assert out == "---\nsystem: short\nname: x\n---\n"
    out = update_frontmatter(out, {"system": "a\nb\n"})
    assert out == "---\nsystem: |\n  a\n  b\nname: x\n---\n"
    assert parse_task(out, path="t.md").system == "a\nb\n"


def test_second_spelling_of_a_key_is_dropped() -> None:
    text = "---\ndeleteAfterRun: false\nname: x\nonce: false\n---\n"
    out = update_frontmatter(text, {"delete_after_run": True})
    assert out == "---\ndeleteAfterRun: true\nname: x\n---\n"


def test_trailing_comment_with_quotes_and_hashes() -> None:
    text = "---\nname: 'a # not a comment'  # real\n---\n"
    out = update_frontmatter(text, {"name": "b"})
    assert out == "---\nname: b  # real\n---\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("---\nname: [unclosed\n---\n", "not valid YAML"),
        ("---\nname: a\nname: b\n---\n", "not valid YAML"),
        ("---\n- a\n---\n", "not a block of `key: value` lines"),
        ("---\n{name: a, tags: [b]}\n---\n", "not a block of `key: value` lines"),
        ("---\nname: x\n", "frontmatter is not closed"),
    ],
)
def test_edit_refuses_broken_frontmatter(text: str, message: str) -> None:
    with pytest.raises(TaskFileError) as info:
        update_frontmatter(text, {"name": "y"}, path="t.md")
    assert message in info.value.message
    assert info.value.path == "t.md"


# ----------------------------------------------------------------------------- render_task


def test_render_task_order_and_quoting() -> None:
    fields: dict[str, Any] = {
        "tags": ["ops"],
        "execute": True,
        "schedule": "*/5 * * * *",
        "name": "Fehler-Überwachung",
        "env": {"FLAG": "yes", "AT": "9:30", "MODE": "0755", "URL": "https://x.example/a"},
        "deleteAfterRun": False,
        "description": None,
    }
    text = render_task(fields, "Body")
    assert text == (
        "---\n"
        "name: Fehler-Überwachung\n"
        'schedule: "*/5 * * * *"\n'
        "execute: true\n"
        "delete_after_run: false\n"
        "env:\n"
        '  FLAG: "yes"\n'
        '  AT: "9:30"\n'
        '  MODE: "0755"\n'
        "  URL: https://x.example/a\n"
        "tags: [ops]\n"
        "---\n"
        "Body\n"
    )
    task = parse(text)
    assert task.env == {"FLAG": "yes", "AT": "9:30", "MODE": "0755", "URL": "https://x.example/a"}


def test_render_task_cron_is_always_double_quoted() -> None:
    text = render_task({"schedule": "0 9 * * *", "triggers": [{"cron": "30 8 * * 1"}]}, "")
    assert 'schedule: "0 9 * * *"' in text
    assert '- cron: "30 8 * * 1"' in text
    assert text.endswith("---\n")


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (CronTrigger("0 0 * * *", source="@daily"), {"cron": "@daily"}),
        (CronTrigger("0 9 * * *", id="cron-2"), {"cron": "0 9 * * *"}),
        (
            CronTrigger("0 9 * * *", id="morning", timezone="UTC"),
            {"cron": "0 9 * * *", "timezone": "UTC", "id": "morning"},
        ),
        (EveryTrigger(5400.0), {"every": "1h30m"}),
        (WebhookTrigger(), {"webhook": True}),
        (
            WebhookTrigger(id="gh", signature="github", secret="S"),
            {"webhook": {"signature": "github", "secret": "S"}, "id": "gh"},
        ),
        (
            AtTrigger(datetime(2026, 1, 1, 12, tzinfo=BERLIN), timezone="Europe/Berlin"),
            {"at": "2026-01-01T12:00:00", "timezone": "Europe/Berlin"},
        ),
        (AtTrigger(datetime(2026, 1, 1, 12, tzinfo=UTC)), {"at": "2026-01-01T12:00:00+00:00"}),
    ],
)
def test_trigger_to_dict(trigger: Any, expected: dict[str, Any]) -> None:
    assert trigger_to_dict(trigger) == expected


# ----------------------------------------------------------------------------- replace_body


@pytest.mark.parametrize(
    ("text", "body", "expected"),
    [
        ("---\nname: x\n---\nold\n", "new", "---\nname: x\n---\nnew\n"),
        ("---\nname: x\n---\nold\n", "new\n", "---\nname: x\n---\nnew\n"),
        ("---\nname: x\n---\nold\n", "", "---\nname: x\n---\n"),
        ("---\nname: x\n...\nold\n---\nmore\n", "new", "---\nname: x\n...\nnew\n"),
        ("---\r\nname: x\r\n---\r\nold\r\n", "a\nb", "---\r\nname: x\r\n---\r\na\r\nb\r\n"),
        ("---\r\nname: x\r\n---\r\nold\r\n", "a\r\nb\r\n", "---\r\nname: x\r\n---\r\na\r\nb\r\n"),
        ("---\nname: x\n---", "new", "---\nname: x\n---\nnew\n"),  # no newline after `---`
        ("\ufeff---\nname: x\n---\nold\n", "new", "\ufeff---\nname: x\n---\nnew\n"),
        ("just a body\n", "new", "new\n"),
        ("\ufeffjust a body\n", "new", "\ufeffnew\n"),
        ("# note\r\nbody\r\n", "x\ny", "x\r\ny\r\n"),
    ],
)
def test_replace_body(text: str, body: str, expected: str) -> None:
    assert replace_body(text, "t.md", body) == expected


def test_replace_body_keeps_the_frontmatter_bytes_and_reads_back() -> None:
    new = replace_body(HAND_WRITTEN, "tasks/demo.md", "Only text now.")
    front = HAND_WRITTEN[: HAND_WRITTEN.index("<run_python>")]
    assert new == front + "Only text now.\n"
    task = parse(new)
    assert (task.body, task.name, task.tags) == (
        "Only text now.\n",
        "Error monitor",
        ("ops", "daily"),
    )


def test_replace_body_refuses_an_unclosed_frontmatter() -> None:
    with pytest.raises(TaskFileError, match="not closed"):
        replace_body("---\nname: x\n", "t.md", "new")


@pytest.mark.parametrize(
    ("text", "newline", "expected"),
    [
        ("a\nb\n", "\n", "a\nb\n"),
        ("a\r\nb\n", "\n", "a\nb\n"),
        ("a\nb\r\n", "\r\n", "a\r\nb\r\n"),
        ("a\rb", "\r\n", "a\rb"),  # a lone CR is not a line break
        ("", "\r\n", ""),
    ],
)
def test_with_newlines(text: str, newline: str, expected: str) -> None:
    assert with_newlines(text, newline) == expected
