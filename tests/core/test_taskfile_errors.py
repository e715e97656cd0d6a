"""Tests for core/taskfile.py: malformed task files give one error at the right place.

Each case is (file content, part of the message, line, column or None, part of the hint).
Lines and columns are 1-based positions in the file, counting the `---` line.
"""

from __future__ import annotations

import pytest
import yaml

from daycare_cli.core import yamlrules
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.taskfile import MAX_FILE_BYTES, MAX_FRONTMATTER_CHARS, parse_task
from daycare_cli.core.yamlrules import MAX_DEPTH


def fm(*lines: str, body: str = "Body.\n") -> str:
    """A task file with these frontmatter lines (line 2 onwards) and a body."""
    return "---\n" + "".join(line + "\n" for line in lines) + "---\n" + body


CASES: list[tuple[str | bytes, str, int, int | None, str]] = [
    # --- YAML syntax
    (fm("schedule: */15 * * * *"), "cron expression must be quoted", 2, 11, '"*/15 * * * *"'),
    (fm("name: x", "schedule: @daily"), "cron expression must be", 3, 11, 'schedule: "@daily"'),
    (
        fm("triggers:", "  - cron: * * * * *  # each minute"),
        "cron expression must be quoted",
        3,
        11,
        '- cron: "* * * * *"',
    ),
    (fm("name: @home"), "value starting with `@` must be quoted", 2, 7, 'name: "@home"'),
    (fm("description: Note: this"), "mapping values are not allowed", 2, 18, "must be quoted"),
    (fm("name: x", "  bad: indent"), "invalid YAML", 3, None, ""),
    (fm("notify: [a, b", "name: x"), "unclosed `[` or `{`", 2, 9, "close it"),
    (fm('name: "unterminated', "tags: [a]"), "unclosed quoted string", 2, 7, "closing quote"),
    (fm("\tname: x"), "tab character", 2, 1, "indent with spaces"),
    (fm("sandbox:", "\tnetwork: true"), "tab character", 3, None, "indent with spaces"),
    (fm("name: a", "name: b"), "duplicate key `name`", 3, 1, "first is on line 2"),
    (fm("env:", "  A: 1", "  A: 2"), "duplicate key `A`", 4, 3, "line 3"),
    (fm("deleteAfterRun: true", "once: false"), "are the same setting", 3, 1, "line 2"),
    (fm("base: &b {x: 1}", "<<: *b"), "merge keys", 3, 1, "write the keys out"),
    (fm("name: a\x01b"), "control character U+0001", 2, 8, "remove the control character"),
    (fm("? [a]", ": 1"), "a key must be a plain name, not a list", 2, 3, ""),
    (fm("1: x"), "a frontmatter key must be a name, not an integer", 2, 1, ""),
    # --- the frontmatter as a whole
    (fm("- name: x"), "must be a mapping", 2, 1, "one setting per line"),
    (fm("just a sentence"), "must be a mapping", 2, 1, "one setting per line"),
    ("---\nname: x\nNo closing line.\n", "frontmatter is not closed", 1, 1, "add a line `---`"),
    ("", "empty task file", 1, None, "schedule:"),
    ("\n  \n", "empty task file", 1, None, "name: My task"),
    # --- keys
    (fm("shedule: '0 9 * * *'"), "unknown key `shedule`", 2, 1, "did you mean `schedule`?"),
    (fm("name: x", "Timezone: UTC"), "unknown key `Timezone`", 3, 1, "did you mean `timezone`?"),
    (fm("cron: '0 9 * * *'"), "unknown key `cron`", 2, 1, "schedule:"),
    (fm("every: 5m"), "unknown key `every`", 2, 1, "triggers"),
    (fm("foo: 1"), "unknown key `foo`", 2, 1, "the keys are: name, description"),
    (fm("sandbox:", "  netwrk: true"), "unknown sandbox key `netwrk`", 3, 3, "`network`"),
    # --- types
    (fm("enabled: maybe"), "`enabled` must be true or false, not a string", 2, 10, "enabled: true"),
    (fm("timeout: [1]"), "`timeout` must be a duration", 2, 10, "timeout: 60s"),
    (fm("name: [a, b]"), "`name` must be a string, not a list", 2, 7, "name: "),
    (fm("name: 42"), "`name` must be a string, not an integer", 2, 7, 'quote it: "42"'),
    (fm("tags: [a, 3]"), "each item of `tags` must be a string", 2, 11, 'quote it: "3"'),
    (fm("tags: ops"), "`tags` must be a list, not a string", 2, 7, "tags: [ops, daily]"),
    (fm("retries: 1.5"), "`retries` must be a whole number", 2, 10, "retries: 2"),
    (fm("retries: 1000"), "at most 100", 2, 10, "retries: 3"),
    (fm("env: [A, B]"), "`env` must be a mapping, not a list", 2, 6, "env:"),
    (fm("env:", "  LIST: [1]"), "env `LIST` must be a string, not a list", 3, 9, 'LIST: "text"'),
    (fm("env:", "  EMPTY:"), "env `EMPTY` must be a string, not an empty value", 3, 9, 'EMPTY: ""'),
    (fm("env:", "  1BAD: x"), "not a valid environment variable name", 3, 3, "letters, digits"),
    (fm("env:", "  DAYCARE_TASK_ID: x"), "set by daycare itself", 3, 3, "another name"),
    (fm("sandbox: true"), "`sandbox` must be a mapping, not a boolean", 2, 10, "network: false"),
    (fm("sandbox:", "  network: [api.github.com]"), "allow-lists are not supported", 3, 12, "true"),
    (fm("sandbox:", "  memory: lots"), "must be a size like 512M", 3, 11, "memory: 512M"),
    (fm("sandbox:", "  memory: 1K"), "at least 16M", 3, 11, "memory: 512M"),
    (fm("sandbox:", "  read: /var/log"), "`sandbox.read` must be a list", 3, 9, "read: [/var/log]"),
    (fm("sandbox:", "  write: [out]"), "must be absolute paths or start with `~/`", 3, 11, "~/"),
    (fm("sandbox:", "  read:", "    - /a", "    - notes/x"), "not 'notes/x'", 5, 7, "read:"),
    (fm("sandbox:", "  read: [~bob/x]"), "must be absolute", 3, 10, "read: [/var/log]"),
    (fm("sandbox:", "  write: [/srv/../etc]"), "must not contain `.` or `..`", 3, 11, "/srv/data"),
    (fm("sandbox:", "  read: [~/./x]"), "must not contain `.` or `..`", 3, 10, "without"),
    (fm("sandbox:", "  disk: lots"), "`sandbox.disk` must be a size", 3, 9, "disk: 256M"),
    (fm("sandbox:", "  disk: 2T"), "at most 1T", 3, 9, "disk: 1G"),
    # --- enums
    (fm("overlap: skp"), "`overlap` must be one of skip, queue, allow, replace", 2, 10, "`skip`"),
    (fm("catch_up: false"), "`catch_up` must be one of skip, latest, all", 2, 11, "catch_up: skip"),
    (fm("notify_on: [response, falure]"), "each item of `notify_on`", 2, 23, "`failure`"),
    # --- durations
    (fm("timeout: 5x"), "invalid duration '5x'", 2, 10, "timeout: 60s"),
    (fm("timeout: -5"), "cannot be negative", 2, 10, "timeout: 60s"),
    (fm("retry_delay: '-1m'"), "cannot be negative", 2, 14, "retry_delay: 30s"),
    (fm("timeout: 0"), "`timeout` must be more than 0s", 2, 10, "timeout: 60s"),
    (fm("triggers:", "  - every: 0.5s"), "`every` must be at least 1s", 3, 12, "every: 15m"),
    # upper bounds: whatever a file may hold, the daemon can add to a date
    (fm("jitter: 99999999999d"), "at most 366 days (366d), not 99999999999d", 2, 9, "jitter:"),
    (fm("triggers:", "  - every: 3000000d"), "`every`: a duration can be at most 366", 3, 12, ""),
    (fm("catch_up_window: 99999999999d"), "at most 366 days", 2, 18, "catch_up_window:"),
    (fm("timeout: 400 days"), "at most 366 days (366d), not 400 days", 2, 10, "timeout: 60s"),
    (fm("run_timeout: 100000000000"), "at most 366 days", 2, 14, "run_timeout:"),
    (fm("retry_delay: 9999999w"), "at most 366 days", 2, 14, "retry_delay: 30s"),
    (fm("sandbox:", "  cpu: 999999d"), "at most 366 days", 3, 8, ""),
    (fm("triggers:", "  - every: 2 months"), "no fixed length", 3, 12, "every: 15m"),
    (fm("timeout: 30m1h"), "largest first", 2, 10, "timeout: 60s"),
    (
        fm("triggers:", "  - at: '9999-12-31T23:00:00'"),
        "`at` must be a time between the years 1970 and 8999, not in 9999",
        3,
        9,
        'at: "2026-11-22T09:00:00"',
    ),
    (fm("triggers:", "  - at: 0001-01-01T00:00:00Z"), "between the years 1970 and 8999", 3, 9, ""),
    # --- YAML 1.1 / 1.2 ambiguity
    (fm("enabled: yes"), "`yes` is ambiguous", 2, 10, "write true"),
    (fm("execute: off"), "`off` is ambiguous", 2, 10, "write false"),
    (fm("tags: [n]"), "`n` is ambiguous", 2, 8, '"n"'),
    (fm("name: 9:30"), "base-60 number 570", 2, 7, 'quote it: "9:30"'),
    (fm("env:", "  MODE: 0755"), "`0755` is ambiguous", 3, 9, "without leading zeros"),
    (fm("name: 1_000"), "`1_000` is ambiguous", 2, 7, "without underscores"),
    (fm("name: 1e3"), "YAML 1.2 as a number", 2, 7, '"1e3"'),
    (fm("on: true"), "`on` is ambiguous", 2, 1, '"on"'),
    # --- schedules and zones
    (fm("timezone: Europe/Berln"), "unknown time zone", 2, 11, "Europe/Berlin"),
    (fm("triggers:", "  - cron: '0 9 * * *'", "    timezone: Mars/X"), "unknown time", 4, 15, ""),
    (fm("schedule: '0 0 31 2 *'"), "never fires", 2, 16, ""),
    (fm('schedule: "0 25 * * *"'), "hour", 2, 14, "0-23"),
    (fm("schedule: 61 * * * *"), "minute", 2, 11, ""),
    (fm('schedule: "0 9 * *"'), "expected 5 fields", 2, None, ""),
    (fm('schedule: "@dayly"'), "unknown cron macro", 2, 12, "@daily"),
    (fm("schedule: ['0 9 * * *']"), "`schedule` must be a string, not a list", 2, 11, "schedule:"),
    # --- triggers
    (fm("triggers:", "  cron: '0 9 * * *'"), "`triggers` must be a list", 3, 3, "- "),
    (fm("triggers: ['0 9 * * *']"), "a trigger must be a mapping", 2, 12, '- cron: "0 9 * * *"'),
    (fm("triggers:", "  - id: x"), "needs one of `cron`, `at`, `every` or `webhook`", 3, 5, ""),
    (fm("triggers:", "  - crn: '0 9 * * *'"), "unknown trigger key `crn`", 3, 5, "`cron`"),
    (fm("triggers:", "  - every: 1m", "    cron: '* * * * *'"), "has one type", 4, 5, "own"),
    (fm("triggers:", "  - every: 1m", "    timezone: UTC"), "not apply to an `every`", 4, 5, ""),
    (
        fm("triggers:", "  - every: 1m", "    id: a", "  - every: 2m", "    id: a"),
        "duplicate trigger id `a`",
        6,
        9,
        "also on line 4",
    ),
    (fm("triggers:", "  - every: 1m", "    id: Bad Id"), "id `Bad Id` is not valid", 4, 9, ""),
    (fm("triggers: [{webhook: false}]"), "must be true or a mapping", 2, 22, "webhook: true"),
    (
        fm("triggers:", "  - webhook: {signature: gitlab, secret: S}"),
        "`webhook.signature` must be one of github, hmac-sha256",
        3,
        26,
        "`github`",
    ),
    (fm("triggers:", "  - webhook: {signature: github}"), "needs `secret`", 3, 14, "MY_SECRET"),
    (fm("triggers:", "  - webhook: {secret: S}"), "needs `signature`", 3, 23, "hmac-sha256"),
    (fm("triggers:", "  - webhook: {sig: github}"), "unknown webhook key", 3, 15, "signature"),
    (fm("triggers:", "  - at: tomorrow"), "`at` must be an ISO date and time", 3, 9, "at: "),
    (fm("triggers:", "  - at: 2026-13-01 09:00"), "month must be in 1..12", 3, 9, ""),
    (fm("triggers:", "  - at: 2026-11-24"), "a date without a time", 3, 9, "T09:00"),
    (fm("triggers:", "  - at: 2026-02-30 09:00:00"), "`at` has an invalid value", 3, 9, ""),
    # --- body
    (fm(body="Intro\n\n  <run_python>\nx\n"), "unclosed <run_python>", 5, 3, "</run_python>"),
    (
        fm(body="<run_python>ok</run_python>\n<Run_Python x=1>\nprint(2)\n</run_pythonx>\n"),
        "unclosed <run_python>",
        4,
        1,
        "</run_python>",
    ),
    # --- limits: nesting, triggers, values no check foresaw
    (fm("tags:", "  " + "- " * 5000 + "x"), "nested more than 32 levels", 3, 65, "indentation"),
    (fm("tags: " + "[" * 5000 + "]" * 5000), "nested more than 32 levels", 2, 38, "brackets"),
    (fm("tags: ['[[[', " + "[" * 2000 + "]" * 2001), "nested more than 32", 2, 45, ""),
    (fm("name: x", "tags: " + "[" * 40 + "]" * 40), "nested more than 32 levels", 3, 38, ""),
    (
        fm("env:", *("  " * (i + 1) + f"k{i}:" for i in range(40))),
        "nested more than 32 levels",
        34,
        65,
        "",
    ),
    (fm("triggers:", *["  - every: 1m"] * 1001), "at most 1,000 triggers", 1003, 5, "split"),
    (
        fm("sandbox:", "  memory: 1" + "0" * 400 + "G"),
        "cannot be read (OverflowError: cannot convert float infinity to integer)",
        3,
        11,
        "report this as a daycare bug",
    ),
    (fm("retries: 1" + "0" * 5000), "`retries` has an invalid value '10000", 2, 10, ""),
    # --- encoding, BOM, CRLF
    (b"---\nname: x\x00y\n---\n", "not a text file", 2, 8, "UTF-8 Markdown"),
    (b"\xff\xfe-\x00-\x00-\x00\n\x00", "not a text file", 1, 4, "re-save the file as UTF-8"),
    (b"---\nname: caf\xe9\n---\n", "not valid UTF-8", 2, 10, "UTF-8"),
    ("\ufeff---\nname: x\nfoo: 1\n---\n".encode(), "unknown key `foo`", 3, 1, ""),
    ("\ufeff---\nenabled: yes\n---\n".encode(), "`yes` is ambiguous", 2, 10, ""),
    (b"---\r\nname: x\r\nschedule: */5 * * * *\r\n---\r\n", "must be quoted", 3, 11, "*/5 *"),
    (b"---\r\nname: x\r\n\r\noverlap: nope\r\n---\r\n", "`overlap` must be one of", 4, 10, ""),
]


@pytest.mark.parametrize(
    ("text", "message", "line", "col", "hint"),
    CASES,
    ids=[f"{i:02d}-{case[1][:30]}" for i, case in enumerate(CASES)],
)
def test_malformed_file(
    text: str | bytes, message: str, line: int, col: int | None, hint: str
) -> None:
    with pytest.raises(TaskFileError) as info:
        parse_task(text, path="tasks/demo.md")
    error = info.value
    assert message in error.message
    assert error.path == "tasks/demo.md"
    assert error.line == line
    if col is not None:
        assert error.col == col
    assert hint in (error.hint or "")
    assert "\n" not in error.message  # one sentence; the hint carries the rest
    if line and not isinstance(text, bytes):
        # the excerpt is the file's own line
        lines = text.lstrip("\ufeff").replace("\r\n", "\n").split("\n")
        assert error.excerpt == lines[line - 1]
    assert str(error).startswith(f"tasks/demo.md:{line}:" if line else "tasks/demo.md: ")


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    ("path", "task_id", "hint"),
    [
        ("tasks/My Task.md", None, "`my-task.md`"),
        ("tasks/notes.txt", None, "`notes-txt.md`"),
        ("tasks/-x.md", None, "`x.md`"),
        ("tasks/ok.md", "Not_OK", "`not-ok.md`"),
        ("tasks/" + "a" * 64 + ".md", None, "at most 63"),
    ],
)
def test_invalid_task_id(path: str, task_id: str | None, hint: str) -> None:
    with pytest.raises(TaskFileError) as info:
        parse_task("---\nname: x\n---\n", path=path, task_id=task_id)
    assert "is not a valid task id" in info.value.message
    assert hint in (info.value.hint or "")


def test_exit_code_is_invalid_task_file() -> None:
    with pytest.raises(TaskFileError) as info:
        parse_task("---\nfoo: 1\n---\n", path="t.md")
    assert info.value.exit_code == 4


def test_a_file_over_one_mib_is_refused_at_the_line_that_crosses_it() -> None:
    line = "x" * 99 + "\n"  # 100 bytes a line
    head = "---\nname: big\n---\n"
    fits = (head + line * ((MAX_FILE_BYTES - len(head)) // 100)).encode()
    assert parse_task(fits, path="tasks/big.md").name == "big"
    over = fits + line.encode()
    assert len(over) > MAX_FILE_BYTES
    for data in (over, over.decode()):
        with pytest.raises(TaskFileError) as info:
            parse_task(data, path="tasks/big.md")
        error = info.value
        assert error.message == "the file is over 1 MiB, the limit for a task file"
        assert error.line == over.count(b"\n", 0, MAX_FILE_BYTES) + 1
        assert str(error).startswith(f"tasks/big.md:{error.line}: ")
        assert "<run_python>" in (error.hint or "")


def test_frontmatter_over_128_kib_is_refused_before_it_is_parsed() -> None:
    # 600 KB of triggers took 1-3 s to compose; the limit keeps reading well under 2 s.
    lines = [f"  - cron: '{i % 60} * * * *'" for i in range(8000)]
    with pytest.raises(TaskFileError) as info:
        parse_task(fm("triggers:", *lines), path="tasks/many.md")
    error = info.value
    assert error.message == "the frontmatter is over 128 KiB, the limit for settings"
    settings = "".join(line + "\n" for line in ["triggers:", *lines])
    assert error.line == 2 + settings.count("\n", 0, MAX_FRONTMATTER_CHARS)
    body = "x" * (MAX_FRONTMATTER_CHARS + 10) + "\n"  # the body may be longer
    assert parse_task(fm("name: x", body=body), path="tasks/long.md").body == body


@pytest.mark.parametrize(("dashes", "message"), [
    (MAX_DEPTH - 1, "each item of `tags` must be a string, not a list"),
    (MAX_DEPTH, "nested more than 32 levels"),
])  # fmt: skip
def test_nesting_is_read_up_to_the_limit(dashes: int, message: str) -> None:
    # The frontmatter is one mapping; each dash opens a list: 1 + dashes levels.
    with pytest.raises(TaskFileError) as info:
        parse_task(fm("tags:", "  " + "- " * dashes + "x"), path="tasks/deep.md")
    assert message in info.value.message


def test_recursion_in_the_yaml_composer_is_a_depth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without libyaml, PyYAML composes nesting by recursion in Python: a 5,000-deep list
    # raises RecursionError long before our own depth check sees the tree.
    monkeypatch.setattr(yamlrules, "LOADER", yaml.SafeLoader)
    with pytest.raises(TaskFileError) as info:
        parse_task(fm("tags:", "  " + "- " * 5000 + "x"), path="tasks/deep.md")
    assert "nested more than 32 levels" in info.value.message
    assert (info.value.line, info.value.col) == (3, 65)


def test_many_unnamed_triggers_get_ids_past_the_named_ones() -> None:
    lines = ["  - every: 1m", "    id: every-3", *["  - every: 1m"] * 998, "  - cron: '* * * * *'"]
    task = parse_task(fm("triggers:", *lines), path="tasks/many.md")
    ids = [t.id for t in task.triggers]
    assert ids[:4] == ["every-3", "every", "every-2", "every-4"]
    assert ids[-2:] == ["every-999", "cron"]
    assert len(set(ids)) == len(ids) == 1000
