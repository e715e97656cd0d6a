"""Tests for core/taskfile.py update_frontmatter: an edit changes only the lines of its keys.

Comments, order, quoting, blank lines, CRLF and a BOM must survive byte for byte.
"""

from __future__ import annotations

from typing import Any

import pytest

from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.taskfile import parse_task, update_frontmatter

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
