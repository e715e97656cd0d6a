"""Crontab lines -> tasks, on real crontab lines (crontab(5), cronie's rules)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daycare_cli.core.crontab import entry_task, parse_crontab, split_percent
from daycare_cli.core.imported import ImportFileError, command_body
from daycare_cli.core.prompt import find_blocks
from daycare_cli.core.taskedit import render_task
from daycare_cli.core.taskfile import parse_task

CRONTAB = """\
# Edit this file to introduce tasks to be run by cron.
# m h  dom mon dow   command
SHELL=/bin/sh
PATH = /usr/local/bin:/usr/bin:/bin
MAILTO="ops@example.com"

@reboot /usr/local/bin/start-tunnel --quiet
*/5 * * * * curl -fsS https://example.com/ping > /dev/null
0 4 * * 1-5\t/usr/local/bin/backup.sh --full 2>&1 | logger -t backup
CRON_TZ=Europe/Berlin
RANDOM_DELAY=10
30 8 1 * *  date +\\%Y-\\%m-\\%d | mail -s "report" me%Dear me,%the report.%
MAILTO=""
@daily find /tmp -mtime +7 -delete
"""


def entries() -> list:  # type: ignore[type-arg]
    return parse_crontab(CRONTAB, path="crontab")


def test_entries_schedules_and_variables() -> None:
    found = entries()
    assert [(e.line, e.schedule) for e in found] == [
        (7, "@reboot"),
        (8, "*/5 * * * *"),
        (9, "0 4 * * 1-5"),
        (12, "30 8 1 * *"),
        (14, "@daily"),
    ]
    assert found[2].command == "/usr/local/bin/backup.sh --full 2>&1 | logger -t backup"
    assert found[0].env["MAILTO"] == "ops@example.com"  # quotes stripped
    assert found[0].env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert "CRON_TZ" not in found[2].env and found[3].env["CRON_TZ"] == "Europe/Berlin"
    assert found[4].env["MAILTO"] == ""


@pytest.mark.parametrize(
    ("text", "command", "stdin"),
    [
        ("echo hi", "echo hi", None),
        ("date +\\%Y", "date +%Y", None),
        ("mail me%Hi%there", "mail me", "Hi\nthere\n"),
        ("mail me%Hi 100\\%%", "mail me", "Hi 100%\n"),
        ("cat%", "cat", ""),
    ],
)
def test_percent_signs(text: str, command: str, stdin: str | None) -> None:
    assert split_percent(text) == (command, stdin)


def test_the_percent_entry_keeps_its_stdin() -> None:
    report = entries()[3]
    assert report.command == 'date +%Y-%m-%d | mail -s "report" me'
    assert report.stdin == "Dear me,\nthe report.\n"


def test_entries_become_valid_tasks() -> None:
    for entry in entries():
        imported = entry_task(entry, path="crontab")
        text = render_task(imported.fields, imported.body)
        task = parse_task(text, path="x.md", task_id="x")
        assert task.execute and task.model == "none"
        assert len(find_blocks(task.body)) == 1
    reboot, ping, backup, report, daily = (entry_task(e, path="crontab") for e in entries())
    assert reboot.fields["schedule"] == "@reboot"
    assert any("daemon starts" in w for w in reboot.warnings)
    assert any("ops@example.com" in w for w in ping.warnings)
    assert ping.fields["env"] == {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    assert report.fields["timezone"] == "Europe/Berlin" and report.fields["jitter"] == "10m"
    assert "timezone" not in backup.fields
    assert not any("MAILTO" in w for w in daily.warnings)
    assert reboot.name == "start-tunnel --quiet"


def test_the_block_runs_the_command_with_its_stdin_and_exit_code() -> None:
    body = command_body(shell='read a; read b; echo "$b,$a"; exit 3', stdin="x\ny\n")
    (block,) = find_blocks(body)
    done = subprocess.run([sys.executable, "-c", block.code], capture_output=True, text=True)
    assert done.stdout == "y,x\n"
    assert done.returncode == 3


def test_a_command_cannot_close_its_block() -> None:
    body = command_body(shell="echo '</run_python>' <x>")
    (block,) = find_blocks(body)
    done = subprocess.run([sys.executable, "-c", block.code], capture_output=True, text=True)
    assert done.stdout == "</run_python>\n" or done.returncode != 0  # sh: no file x
    assert "</run_python>" not in block.code


def test_system_crontab_has_a_user_field() -> None:
    (entry,) = parse_crontab("17 * * * * root cd / && run-parts --report /etc/cron.hourly\n",
                             path="/etc/crontab", system=True)  # fmt: skip
    assert entry.user == "root"
    assert entry.command == "cd / && run-parts --report /etc/cron.hourly"
    assert any("as root" in w for w in entry_task(entry, path="/etc/crontab").warnings)


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("# ok\n*/5 * * * echo hi\n", 2, 11, "bad weekday"),
        ("0 25 * * * echo\n", 1, 3, "bad hour"),
        ("@fortnightly echo\n", 1, 1, "unknown cron macro"),
        ("0 9 * *\n", 1, 1, "expected 5 time fields"),
        ("  0 9 * * *   \n", 1, 3, "expected 5 time fields"),
    ],
)
def test_bad_lines_name_the_line(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ImportFileError) as caught:
        parse_crontab(text, path="crontab")
    assert (caught.value.line, caught.value.col) == (line, col)
    assert message in caught.value.message
    assert caught.value.exit_code == 4
