"""The CLI as a person and a script meet it: the real console script in a subprocess, at
80 columns, its output piped (issue 8).

Lists you can act on (full ids, run references), watching a run happen (live block
output, a failing block's printed lines in every view), and surprises refused with their
exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

LONG_ID = "a-task-with-a-rather-long-id-that-will-not-fit"
PRINTS_THEN_FAILS = """\
---
name: Prints then fails
execute: true
---
<run_python>
print("first line")
print("second line")
raise ValueError("boom")
</run_python>
"""
SLOW = """\
---
name: Slow
execute: true
---
<run_python>
import time
print("before the nap", flush=False)
time.sleep(2)
print("after the nap")
</run_python>
"""


def console_command() -> list[str]:
    """The installed console script (as conftest's `console` fixture runs it)."""
    script = Path(sys.executable).with_name("daycare")
    return [str(script)] if script.exists() else [sys.executable, "-m", "daycare_cli.cli.entry"]


def run_ids(console, *args: str) -> list[str]:
    return [r["id"] for r in json.loads(console("runs", "ls", "--json", *args).stdout)]


# --- lists you can act on ------------------------------------------------------------------


def test_tables_show_full_ids_at_80_columns(console, write) -> None:
    write(
        LONG_ID,
        "---\nname: A long name that tells the whole story\nschedule: '0 9 * * *'\n---\nx\n",
    )
    write("short", "---\nname: Short\n---\nx\n")
    assert console("task", "run", "short", "--local").returncode == 0
    assert console("task", "run", LONG_ID, "--local").returncode == 0
    ids = run_ids(console)
    tables = {
        "task ls": console("task", "ls").stdout,
        "runs ls": console("runs", "ls").stdout,
        "events": console("events").stdout,
        "next": console("next").stdout,
    }
    for words, text in tables.items():
        assert f" {LONG_ID}" in text or text.startswith(LONG_ID), (words, text)
        assert "…" not in text, (words, text)
    for run_id in ids:
        assert run_id in tables["runs ls"]
    assert "LAST RUN" in tables["task ls"] and "NEXT (UTC)" in tables["task ls"]
    assert "STARTED (UTC)" in tables["runs ls"]
    short_row = next(line for line in tables["task ls"].splitlines() if " short " in line)
    assert "ago succeeded" in short_row or "now succeeded" in short_row


def test_task_ls_json_has_the_last_run(console, write) -> None:
    write("short", "---\nname: Short\n---\nx\n")
    before = json.loads(console("task", "ls", "--json").stdout)
    assert before[0]["last_run"] is None
    console("task", "run", "short", "--local")
    after = json.loads(console("task", "ls", "--json").stdout)[0]["last_run"]
    assert after["status"] == "succeeded" and after["id"] == run_ids(console)[0]


def test_runs_are_named_by_prefix_last_or_task(console, write) -> None:
    write("one", "---\nname: One\n---\nfirst\n")
    write("two", "---\nname: Two\n---\nsecond\n")
    for task in ("one", "two", "one"):
        assert console("task", "run", task, "--local").returncode == 0
    newest, middle, oldest = run_ids(console)
    shown = {
        ref: json.loads(console("runs", "show", ref, "--json").stdout)["id"]
        for ref in ("last", "two", "one", middle[:-3], newest)
    }
    assert shown == {"last": newest, "two": middle, "one": newest, middle[:-3]: middle,
                     newest: newest}  # fmt: skip
    # logs takes the same references.
    logs = console("logs", "two").stdout
    assert middle in logs and newest not in logs
    assert oldest in console("logs", oldest[:20], "-n", "1").stdout
    # Ambiguous and unknown references are refused, with the right code.
    ambiguous = console("runs", "show", newest[:4])
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr
    unknown = console("runs", "show", "zzz")
    assert unknown.returncode == 3 and "`last`" in unknown.stderr


# --- watch it happen -------------------------------------------------------------------------


def test_task_run_streams_a_block_line_before_the_block_ends(write, home: Path) -> None:
    write("slow", SLOW)
    env = {**os.environ, "DAYCARE_HOME": str(home), "COLUMNS": "80"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [*console_command(), "task", "run", "slow", "--local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen: list[tuple[float, str]] = []
    for line in proc.stderr:
        seen.append((time.monotonic() - started, line.rstrip("\n")))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, seen
    first = next(t for t, line in seen if line == "  │ before the nap")
    second = next(t for t, line in seen if line == "  │ after the nap")
    ended = next(t for t, line in seen if line.startswith("✓ block 1"))
    # The first line arrives while the block still sleeps, not with the rest at the end.
    assert second - first >= 1.5 and first < ended - 1.5, seen
    assert "before the nap\nafter the nap" in out  # then the result, on stdout


def test_a_failing_blocks_output_is_kept_in_every_view(console, write, home: Path) -> None:
    write("fails", PRINTS_THEN_FAILS)
    ran = console("task", "run", "fails", "--local", "--json")
    assert ran.returncode == 1
    data = json.loads(ran.stdout)
    printed = "first line\nsecond line\n<exec_error>ValueError: boom</exec_error>"
    assert printed in data["output"]
    shown = json.loads(console("runs", "show", "last", "--json").stdout)
    assert printed in shown["output"]
    assert shown["blocks"][0]["stdout"] == "first line\nsecond line"
    human = console("runs", "show", "fails").stdout
    assert "│ first line" in human and "│ second line" in human and "ValueError: boom" in human
    log = Path(data["run_dir"], "log.jsonl").read_text()
    events = [json.loads(line) for line in log.splitlines()]
    outputs = "".join(e["text"] for e in events if e["event"] == "block.output")
    assert outputs == "first line\nsecond line\n"
    logs = console("logs", "fails").stdout
    assert "│ first line" in logs and "block.end" in logs
    live = console("task", "run", "fails", "--local")  # piped: plain lines on stderr
    assert "  │ first line\n  │ second line\n✗ block 1: ValueError: boom" in live.stderr


# --- no silent surprises -----------------------------------------------------------------------


def test_surprises_are_refused_with_their_code(console, write, home: Path, tmp_path) -> None:
    write("note", "Just a note.\n")
    lint = console("task", "lint", "note")
    assert lint.returncode == 4 and "note.md:1:1: no frontmatter" in lint.stdout

    made = console("task", "create", "Über Café", "--prompt", "x")
    assert made.returncode == 0 and (home / "tasks" / "uber-cafe.md").exists()
    again = console("task", "create", "Über Café", "--prompt", "y")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert "--if-not-exists" in again.stderr
    same = console("task", "create", "Über Café", "--prompt", "y", "--if-not-exists")
    assert same.returncode == 0 and "exists" in same.stdout
    assert (home / "tasks" / "uber-cafe.md").read_text().endswith("---\nx\n")
    assert not (home / "tasks" / "uber-cafe-2.md").exists()

    model = console("task", "create", "M", "--prompt", "x", "--model", "nosuch-model")
    assert model.returncode == 2 and "unknown model 'nosuch-model'" in model.stderr
    assert console("task", "create", "E", "--prompt", "x", "--model", "echo").returncode == 0
    write("named", "---\nmodel: nosuch-model\n---\nx\n")
    assert "unknown model" in console("task", "lint", "named").stdout

    past = console("task", "create", "P", "--prompt", "x", "--at", "2001-01-01T09:00")
    assert past.returncode == 2 and "--force" in past.stderr
    forced = console("task", "create", "P", "--prompt", "x", "--at", "2001-01-01T09:00", "--force")
    assert forced.returncode == 0

    status = console("runs", "ls", "--status", "bogus")
    assert status.returncode == 2 and "succeeded" in status.stderr
    task = console("runs", "ls", "--task", "uber-cafee")
    assert task.returncode == 3 and "did you mean `uber-cafe`?" in task.stderr
    nowhere = console("--home", str(tmp_path / "nonexistent" / "x"), "task", "ls")
    assert nowhere.returncode == 3 and "does not exist" in nowhere.stderr
    for args in (["task", "ls", "--json"], ["runs", "ls"]):
        assert console("--home", str(tmp_path / "nope"), *args).returncode == 3
    assert not (tmp_path / "nope").exists()


def test_every_hint_names_a_command_that_works(console) -> None:
    wrong = console("config", "get", "webhooks.port")
    assert wrong.returncode == 3 and "did you mean `webhook.port`?" in wrong.stderr
    right = console("config", "get", "webhook.port")
    assert right.returncode == 0 and right.stdout.strip() == "8765"
    unset = console("config", "get", "model")
    assert unset.returncode == 3 and "`daycare config set model VALUE`" in unset.stderr
    assert console("config", "set", "model", "echo").returncode == 0
    assert console("config", "get", "model").stdout.strip() == "echo"


# --- times people say ----------------------------------------------------------------------


@pytest.mark.parametrize("phrase", ["+2h", "in 30m", "tomorrow 09:00", "next monday 08:00"])
def test_at_phrases_are_echoed_and_written_as_absolute_times(console, home, phrase) -> None:
    made = console(
        "task", "create", "Soon", "--prompt", "x", "--at", phrase, "--tz", "Europe/Berlin"
    )
    assert made.returncode == 0, made.stderr
    assert f"--at {phrase!r} is " in made.stderr and "(Europe/Berlin)" in made.stderr
    text = (home / "tasks" / "soon.md").read_text()
    line = next(line for line in text.splitlines() if "at:" in line)
    written = line.split('"')[1]
    assert written[:4].isdigit() and written.endswith(("+01:00", "+02:00"))  # absolute, zoned
    assert f"{written[:10]} {written[11:16]} {written[-6:]}" in made.stderr  # the same time
    listed = json.loads(console("task", "ls", "--json").stdout)[0]
    assert listed["next_fire"] is not None
