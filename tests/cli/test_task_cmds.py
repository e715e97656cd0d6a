"""`daycare task ...` through Typer's runner against a temp home: files on disk and --json."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from daycare_cli.cli.context import CliContext
from daycare_cli.cli.edits import save_change
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.taskchange import Change

REPO = Path(__file__).resolve().parents[2]


def test_lifecycle_create_ls_show_update_triggers_disable_delete(run, tasks: Path) -> None:
    created = run(
        "task", "create", "Morning news", "--schedule", "0 9 * * 1-5",
        "--tz", "Europe/Berlin", "--prompt", "Summarize the news.",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    path = tasks / "morning-news.md"
    assert "morning-news.md" in created.stdout
    assert "At 09:00 on Monday through Friday (Europe/Berlin)" in created.stdout
    assert created.stdout.count("+01:00") + created.stdout.count("+02:00") == 3  # 3 next fires
    text = path.read_text()
    assert 'schedule: "0 9 * * 1-5"' in text
    assert "timezone: Europe/Berlin" in text
    assert text.endswith("---\nSummarize the news.\n")

    listed = json.loads(run("task", "ls", "--json").stdout)
    assert [t["id"] for t in listed] == ["morning-news"]
    item = listed[0]
    assert item["name"] == "Morning news"
    assert item["path"] == str(path)
    assert item["enabled"] is True
    assert item["error"] is None
    assert item["triggers"] == [
        {
            "id": "cron",
            "type": "cron",
            "spec": "0 9 * * 1-5",
            "timezone": "Europe/Berlin",
            "description": "At 09:00 on Monday through Friday (Europe/Berlin)",
        }
    ]
    fire = datetime.fromisoformat(item["next_fire"])
    assert (fire.hour, fire.minute) == (9, 0) and fire.weekday() < 5

    shown = run("task", "show", "morning-news", "--json")
    assert shown.exit_code == 0
    record = json.loads(shown.stdout)
    assert record["body"] == "Summarize the news.\n"
    assert len(record["fires"]) == 5
    assert record["fires"][0] == item["next_fire"]
    assert record["fires_dst"] == [None] * 5  # 09:00 is never moved by a clock change
    extra = ("body", "fires", "fires_dst")
    assert {k: v for k, v in record.items() if k not in extra} == item

    updated = run("task", "update", "morning-news", "--schedule", "0 10 * * *", "--name", "News")
    assert updated.exit_code == 0, updated.output
    assert "schedule" in updated.stdout and "name" in updated.stdout
    text = path.read_text()
    assert 'schedule: "0 10 * * *"' in text and "name: News\n" in text

    added = run("task", "trigger", "add", "morning-news", "--webhook")
    assert added.exit_code == 0, added.output
    text = path.read_text()
    assert "schedule:" not in text  # the shorthand became the full list
    assert 'triggers:\n  - cron: "0 10 * * *"\n  - webhook: true\n' in text
    types = [
        t["type"]
        for t in json.loads(run("task", "show", "morning-news", "--json").stdout)["triggers"]
    ]
    assert types == ["cron", "webhook"]

    removed = run("task", "trigger", "rm", "morning-news", "cron")
    assert removed.exit_code == 0, removed.output
    record = json.loads(run("task", "show", "morning-news", "--json").stdout)
    assert [t["id"] for t in record["triggers"]] == ["webhook"]
    assert record["next_fire"] is None and record["fires"] == []

    disabled = run("task", "disable", "morning-news")
    assert disabled.exit_code == 0
    assert "enabled: false" in path.read_text()
    assert json.loads(run("task", "ls", "--json").stdout)[0]["enabled"] is False

    deleted = run("task", "delete", "morning-news", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert not path.exists()
    assert (tasks / ".archive" / "morning-news.md").exists()
    assert json.loads(run("task", "ls", "--json").stdout) == []

    again = run("task", "create", "Morning news", "--prompt", "Again.")
    assert again.exit_code == 0, again.output
    assert (tasks / "morning-news-2.md").exists()  # the archived id is not reused


def test_create_with_every_and_webhook_warns_about_frequency(run, tasks: Path) -> None:
    result = run("task", "create", "Poll", "--every", "2m", "--webhook", "--prompt", "x")
    assert result.exit_code == 0, result.output
    assert "triggers:\n  - every: 2m\n  - webhook: true\n" in (tasks / "poll.md").read_text()
    assert "more often than every 5 minutes" in result.stderr


def test_create_reads_the_prompt_from_stdin(run, tasks: Path) -> None:
    result = run("task", "create", "From stdin", "--prompt-file", "-", input="Hello from a pipe.\n")
    assert result.exit_code == 0, result.output
    assert (tasks / "from-stdin.md").read_text().endswith("---\nHello from a pipe.\n")


def test_create_without_prompt_opens_the_editor_on_a_template(run, tasks: Path, editor) -> None:
    editor("text = text.replace(text.split('---\\n')[2], 'Edited prompt.\\n')")
    result = run("task", "create", "Edited", "--schedule", "0 8 * * *")
    assert result.exit_code == 0, result.output
    assert (tasks / "edited.md").read_text().endswith("---\nEdited prompt.\n")


def test_create_with_an_unchanged_template_writes_nothing(run, home: Path, editor) -> None:
    editor("pass")
    result = run("task", "create", "Untouched")
    assert result.exit_code == 1
    assert "template was not changed" in result.stderr
    assert not (home / "tasks" / "untouched.md").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # A value typed in an option is a usage error (2), even a schedule; 4 is for files.
        (["--schedule", "*/15 * * *"], 2, "expected 5 fields"),
        (["--schedule", "0 0 31 2 *"], 2, "never fires"),
        (["--every", "soon"], 2, "invalid duration"),
        (["--at", "tomorrow"], 2, "cannot read --at 'tomorrow'"),
        (["--at", "2001-01-01T00:00"], 2, "the time has passed"),
        (["--model", "nosuch-model"], 2, "unknown model 'nosuch-model'"),
        (["--tz", "Mars/Olympus"], 2, "Mars/Olympus"),
        (["--id", "Bad Id"], 2, "not a valid task id"),
        (["--prompt", "x", "--prompt-file", "y"], 2, "not both"),
        (["--bogus"], 2, "No such option"),
    ],
)
def test_create_rejects_bad_input(
    run, home: Path, no_traceback, args: list[str], code: int, message: str
) -> None:
    prompt = [] if "--prompt-file" in args else ["--prompt", "x"]
    result = run("task", "create", "Broken", *prompt, *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert no_traceback(result)
    assert not (home / "tasks" / "broken.md").exists()


BAD = "---\nname: Bad\nschedule: */15 * * * *\n---\nhi\n"
GOOD = '---\nname: Good\nschedule: "0 9 * * *"\ntimezone: Europe/Berlin\n---\nhello\n'


def test_an_invalid_file_is_listed_with_its_error(run, write) -> None:
    write("bad", BAD)
    write("good", GOOD)
    listed = run("task", "ls", "--json")
    assert listed.exit_code == 0
    by_id = {t["id"]: t for t in json.loads(listed.stdout)}
    assert by_id["good"]["error"] is None
    bad = by_id["bad"]
    assert bad["error"].endswith("bad.md:3:11: cron expression must be quoted "
                                 "(YAML reads a leading `*` as an alias)")  # fmt: skip
    assert bad["name"] is None and bad["triggers"] == [] and bad["next_fire"] is None

    table = run("task", "ls")
    assert table.exit_code == 0
    assert "✗" in table.stdout and "line 3: cron expression must be quoted" in table.stdout
    assert "good" in table.stdout and "1 file has errors" in table.stdout


def test_ls_filters_by_tag_but_never_hides_invalid_files(run, write) -> None:
    write("tagged", "---\nname: T\ntags: [ops]\n---\nx\n")
    write("plain", "---\nname: P\n---\nx\n")
    write("bad", BAD)
    ids = [t["id"] for t in json.loads(run("task", "ls", "--json", "--tag", "ops").stdout)]
    assert ids == ["bad", "tagged"]


def test_show_of_an_invalid_file_exits_4_and_of_a_missing_one_3(run, write, no_traceback) -> None:
    write("bad", BAD)
    shown = run("task", "show", "bad")
    assert shown.exit_code == 4
    assert "bad.md:3:11: cron expression must be quoted" in shown.stderr
    assert '  fix: schedule: "*/15 * * * *"' in shown.stderr
    as_json = run("task", "show", "bad", "--json")
    assert as_json.exit_code == 4 and json.loads(as_json.stdout)["body"] is None
    missing = run("task", "show", "bda")
    assert missing.exit_code == 3
    assert "no task 'bda'" in missing.stderr and "did you mean `bad`?" in missing.stderr
    assert all(no_traceback(r) for r in (shown, as_json, missing))


def test_lint_prints_file_line_col_with_a_caret_and_exits_4(run, write, no_traceback) -> None:
    write("bad", BAD)
    write("good", GOOD)
    result = run("task", "lint")
    assert result.exit_code == 4
    lines = result.stdout.splitlines()
    head = next(line for line in lines if line.startswith("error:"))
    assert head.endswith(
        "bad.md:3:11: cron expression must be quoted (YAML reads a leading `*` as an alias)"
    )
    at = lines.index(head)
    assert lines[at + 1] == "  schedule: */15 * * * *"
    assert lines[at + 2] == "            ^"
    assert lines[at + 3] == '  fix: schedule: "*/15 * * * *"'
    assert "2 files checked, 1 invalid" in result.stdout
    assert no_traceback(result)

    only_good = run("task", "lint", "good")
    assert only_good.exit_code == 0 and "all valid" in only_good.stdout

    report = json.loads(run("task", "lint", "--json").stdout)
    assert [(r["id"], r["valid"], r["line"], r["col"]) for r in report] == [
        ("bad", False, 3, 11),
        ("good", True, None, None),
    ]
    assert report[0]["hint"] == 'schedule: "*/15 * * * *"'


def test_lint_takes_paths_and_reports_warnings(run, tmp_path: Path) -> None:
    loose = tmp_path / "loose.md"
    loose.write_text("---\nname: Loose\n---\n<run_python>\nprint(1)\n</run_python>\n")
    result = run("task", "lint", str(loose))
    assert result.exit_code == 0
    assert "warning:" in result.stdout and "`execute` is false" in result.stdout


def test_lint_of_the_examples_passes(run) -> None:
    examples = REPO / "tasks.example"
    if not any(examples.glob("*.md")):
        pytest.skip("no examples yet")
    result = run("task", "lint", "--tasks-dir", str(examples))
    assert result.exit_code == 0, result.output
    assert "all valid" in result.stdout


COMMENTED = (
    "---\n"
    "# a hand-written file\n"
    "name:   'Backup'      # the title\n"
    'schedule: "0 0 * * 0"  # Sundays\n'
    "timezone: Europe/Berlin\n"
    "tags: [ops,   nightly]\n"
    "---\n"
    "Back up the photos.\n"
)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_update_of_one_key_changes_only_its_line(run, write, newline: str) -> None:
    path = write("backup", COMMENTED.replace("\n", newline))
    result = run("task", "update", "backup", "--schedule", "30 1 * * 0")
    assert result.exit_code == 0, result.output
    after = path.read_bytes().decode()
    expected = COMMENTED.replace(
        'schedule: "0 0 * * 0"  # Sundays', 'schedule: "30 1 * * 0"  # Sundays'
    )
    assert after == expected.replace("\n", newline)


def test_update_set_unset_prompt_and_nothing(run, write, no_traceback) -> None:
    path = write("backup", COMMENTED)
    result = run(
        "task", "update", "backup", "--set", "retries=3", "--set", "timeout=90s",
        "--unset", "tags", "--prompt", "New body.", "--execute",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "retries: 3\n" in text and "timeout: 90s\n" in text and "execute: true\n" in text
    assert "tags" not in text and text.endswith("---\nNew body.\n")
    assert "# a hand-written file\n" in text  # comments stay

    nothing = run("task", "update", "backup")
    assert nothing.exit_code == 2 and "nothing to update" in nothing.stderr

    before = path.read_bytes()
    invalid = run("task", "update", "backup", "--set", "retries=-1")
    assert invalid.exit_code == 2 and "retries" in invalid.stderr  # typed: usage, not file
    unknown = run("task", "update", "backup", "--set", "schedul=0 9 * * *")
    assert unknown.exit_code == 2 and "did you mean" in unknown.stderr
    assert path.read_bytes() == before  # nothing written
    assert all(no_traceback(r) for r in (nothing, invalid, unknown))


def test_update_refuses_a_file_changed_on_disk_since_it_was_read(home: Path, write) -> None:
    path = write("backup", COMMENTED)
    cli = CliContext()
    entry = cli.store.load("backup")
    meanwhile = COMMENTED.replace("Back up the photos.", "Back up the photos and music.")
    path.write_text(meanwhile)  # someone saves the file in their editor meanwhile
    with pytest.raises(TaskFileError, match="changed on disk"):
        save_change(cli.store, entry, Change(set_keys={"enabled": False}))
    assert path.read_text() == meanwhile  # their change is not lost


def test_enable_and_disable_edit_one_line(run, write) -> None:
    path = write("backup", COMMENTED)
    assert run("task", "disable", "backup").exit_code == 0
    assert path.read_text() == COMMENTED.replace("---\nBack", "enabled: false\n---\nBack")
    assert run("task", "enable", "backup").exit_code == 0
    assert "enabled: true\n" in path.read_text()
    assert json.loads(run("task", "show", "backup", "--json").stdout)["enabled"] is True


def test_edit_saves_a_valid_change(run, write, editor) -> None:
    path = write("backup", COMMENTED)
    editor("text = text.replace('photos', 'videos')")
    result = run("task", "edit", "backup")
    assert result.exit_code == 0, result.output
    assert path.read_text() == COMMENTED.replace("photos", "videos")


def test_edit_with_an_invalid_result_and_no_answer_keeps_the_file(
    run, write, editor, no_traceback
) -> None:
    path = write("backup", COMMENTED)
    editor("text = text.replace(\"name:   'Backup'\", 'name: [Backup')")
    result = run("task", "edit", "backup")  # no input: "edit again?" is answered no
    assert result.exit_code == 4
    assert "backup.md:3:7" in result.stderr and "discarded" in result.stderr
    assert path.read_text() == COMMENTED
    assert no_traceback(result)


def test_edit_again_after_an_error_then_save(run, write, editor) -> None:
    path = write("backup", COMMENTED)
    counter = editor(
        "if calls == 1:\n"
        "    text = text.replace('Europe/Berlin\\n', 'Europe/Berlin\\nretries: yes\\n')\n"
        "else:\n"
        "    text = text.replace('retries: yes', 'retries: 2')"
    )
    result = run("task", "edit", "backup", input="y\n")
    assert result.exit_code == 0, result.output
    assert counter.read_text() == "2"
    assert "retries: 2\n" in path.read_text()


def test_delete_asks_and_no_answer_keeps_the_file(run, write, tasks: Path) -> None:
    path = write("backup", COMMENTED)
    result = run("task", "delete", "backup")
    assert result.exit_code == 1 and "not deleted" in result.stderr
    assert path.exists()
    assert run("task", "delete", "backup", input="y\n").exit_code == 0
    assert not path.exists() and (tasks / ".archive" / "backup.md").exists()
    assert run("task", "delete", "backup", "--yes").exit_code == 3


def test_global_options_may_follow_the_command(run, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "one.md").write_text(GOOD)
    for args in (
        ["--tasks-dir", str(other), "task", "ls", "--json"],
        ["task", "ls", "--json", "--tasks-dir", str(other)],
        ["task", "ls", f"--tasks-dir={other}", "--json"],
    ):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert [t["id"] for t in json.loads(result.stdout)] == ["one"]


def test_enable_of_an_enabled_task_writes_nothing(run, write) -> None:
    path = write("backup", COMMENTED)
    result = run("task", "enable", "backup")
    assert result.exit_code == 0 and "already enabled" in result.stdout
    assert path.read_text() == COMMENTED


HOOKED = (
    "---\nname: Hooked\ntriggers:\n"
    '  - cron: "0 9 * * *"\n  - webhook: true\n  - every: 1h\n---\nx\n'
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--every", "10m"], [("webhook", "webhook"), ("every", "10m")]),
        (
            ["--at", "2030-05-01T10:00"],
            [("webhook", "webhook"), ("at", "2030-05-01T10:00:00")],
        ),
        (["--schedule", "0 7 * * *"], [("webhook", "webhook"), ("cron", "0 7 * * *")]),
    ],
)
def test_update_replaces_time_triggers_and_keeps_webhooks(
    run, write, args: list[str], expected: list[tuple[str, str]]
) -> None:
    write("hooked", HOOKED)
    result = run("task", "update", "hooked", *args)
    assert result.exit_code == 0, result.output
    record = json.loads(run("task", "show", "hooked", "--json").stdout)
    assert [(t["type"], t["spec"]) for t in record["triggers"]] == expected


def test_create_with_a_past_at_needs_force_and_then_warns(run, tasks: Path) -> None:
    refused = run("task", "create", "Late", "--at", "2001-01-01T00:00", "--prompt", "x")
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert not (tasks / "late.md").exists()
    result = run("task", "create", "Late", "--at", "2001-01-01T00:00", "--prompt", "x", "--force")
    assert result.exit_code == 0, result.output
    assert "its time has passed" in result.stderr


def test_update_at_keeps_the_zone_the_trigger_named(run, write, tasks) -> None:
    write("tz", '---\ntriggers:\n  - at: "2030-01-01T09:00:00"\n    timezone: Asia/Tokyo\n---\nx\n')
    result = run("task", "update", "tz", "--at", "2030-02-02T10:00:00")
    assert result.exit_code == 0, result.output
    text = (tasks / "tz.md").read_text()
    assert '  - at: "2030-02-02T10:00:00"\n    timezone: Asia/Tokyo\n' in text
