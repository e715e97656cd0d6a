"""Help and exit codes as a contract (docs/cli.md, "Exit codes").

The help walk goes over the whole Typer app: every command, option and argument has
help text and an upper-case metavar. The matrix runs one bad call per class of error
for every command through the real console script, and fails for a command it does not
list, so a new command cannot join without its row.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer

from daycare_cli.cli.app import build_app

METAVAR = re.compile(r"^\[?[A-Z][A-Z0-9_=|.]*\]?(\.\.\.)?$")
BUILTIN = {"help", "install_completion", "show_completion"}


def walk(command: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the app with its words, groups included."""
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += walk(sub, (*path, name))
    return found


COMMANDS = walk(typer.main.get_command(build_app()), ("daycare",))
LEAVES = [" ".join(p[1:]) for p, c in COMMANDS if not hasattr(c, "commands")]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_option_and_argument_has_help_and_one_metavar_style(
    path: tuple[str, ...], command: Any
) -> None:
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    for param in command.params:
        if param.name in BUILTIN:
            continue
        where = f"{' '.join(path)} {param.name}"
        assert (getattr(param, "help", None) or "").strip(), f"{where} has no help text"
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        assert param.metavar and METAVAR.match(param.metavar), (
            f"{where}: metavar {param.metavar!r} is not an upper-case word like TASK or [KEY]"
        )


def test_help_shows_the_metavars_not_typer_defaults(run) -> None:
    for words in (["task", "create"], ["task", "trigger", "rm"], ["runs", "show"], ["logs"]):
        text = run(*words, "--help").stdout
        assert "{" not in text.split("╭")[0], text  # no `{name}` in the usage line
    usage = run("task", "trigger", "rm", "--help").stdout
    assert "TASK TRIGGER" in usage


@pytest.mark.parametrize("words", [[], ["task"], ["runs"], ["daemon"], ["task", "trigger"]])
def test_a_bare_group_prints_help_and_exits_0(console, words: list[str]) -> None:
    result = console(*words)
    assert result.returncode == 0, result.stderr
    assert "Usage: daycare" in result.stdout and result.stderr == ""


# --- the exit code matrix ------------------------------------------------------------------

GOOD = '---\nname: Good\nschedule: "0 9 * * *"\n---\nhello\n'
BAD = "---\nname: Bad\nschedule: */15 * * * *\n---\nx\n"
NOTE = "Just a note, no frontmatter.\n"

# command -> {exit code: arguments}; every command has a usage row (2), and rows for
# not found (3) and an invalid task file (4) where it takes a task; 1 where it can fail.
MATRIX: dict[str, dict[int, list[str]]] = {
    "topology": {2: ["--bogus"]},
    "next": {2: ["-n", "0"]},
    "events": {2: ["--limit", "x"], 3: ["--task", "nope"]},
    "logs": {2: ["-n", "-1"], 3: ["nope"]},
    "doctor": {2: ["--bogus"]},
    "task create": {
        1: ["Good", "--prompt", "x"],
        2: ["X", "--prompt", "x", "--schedule", "61 * * * *"],
    },
    "task ls": {2: ["--tag"]},
    "task show": {2: ["good", "--bogus"], 3: ["nope"], 4: ["bad"]},
    "task update": {2: ["good"], 3: ["nope", "--name", "x"], 4: ["bad", "--name", "x"]},
    "task edit": {2: ["good", "extra"], 3: ["nope"]},
    "task delete": {1: ["good"], 2: ["good", "--bogus"], 3: ["nope", "--yes"]},
    "task enable": {2: [], 3: ["nope"], 4: ["bad"]},
    "task disable": {2: [], 3: ["nope"], 4: ["bad"]},
    "task lint": {2: ["--bogus"], 3: ["nope"], 4: ["bad"]},
    "task run": {1: ["fails", "--local"], 2: [], 3: ["nope"], 4: ["bad"]},
    "task expand": {2: [], 3: ["nope"], 4: ["note"]},
    "task trigger add": {2: ["good"], 3: ["nope", "--webhook"], 4: ["bad", "--webhook"]},
    "task trigger rm": {2: ["good"], 3: ["good", "nope"], 4: ["bad", "cron"]},
    "cron explain": {2: ["0 9 * * *", "--tz", "Mars/Base"]},
    "config get": {2: ["a", "b"], 3: ["webhooks.port"]},
    "config set": {2: ["webhook.port", "many"], 3: ["webhooks.port", "1"]},
    "runs ls": {2: ["--status", "bogus"], 3: ["--task", "nope"]},
    "runs show": {2: [], 3: ["nope"]},
    "daemon run": {2: ["--bogus"]},
    "daemon start": {2: ["--wait", "soon"]},
    "daemon stop": {2: ["--timeout", "x"]},
    "daemon restart": {2: ["--bogus"]},
    "daemon reload": {1: [], 2: ["--bogus"]},
    "daemon status": {1: [], 2: ["--bogus"]},
    "daemon install": {2: ["--bogus"]},
    "daemon uninstall": {2: ["--bogus"]},
    "webhook url": {2: [], 3: ["good"], 4: ["bad"]},
    "webhook rotate": {2: [], 3: ["nope"], 4: ["bad"]},
    "export kubernetes": {2: ["--bogus"], 3: ["nope"], 4: ["bad"]},
    "export systemd": {2: ["--bogus"], 3: ["nope"], 4: ["bad"]},
    "import crontab": {2: [], 3: ["/nonexistent/crontab"]},
    "import systemd": {2: [], 3: ["/nonexistent/x.timer"]},
    "deps sync": {2: ["--bogus"], 3: ["nope"], 4: ["bad"]},
    "deps ls": {2: ["extra"]},
    "deps prune": {2: ["--min-age", "soon"]},
}


def test_the_matrix_covers_every_command() -> None:
    assert sorted(MATRIX) == sorted(LEAVES)
    assert all(2 in rows for rows in MATRIX.values())


def test_one_bad_call_per_class_exits_with_its_code(console, write, home: Path) -> None:
    write("good", GOOD)
    write("bad", BAD)
    write("note", NOTE)
    write("fails", "---\nexecute: true\n---\n<run_python>\nraise SystemExit(3)\n</run_python>\n")
    calls = [
        (command, code, args) for command, rows in MATRIX.items() for code, args in rows.items()
    ]

    def call(item: tuple[str, int, list[str]]) -> tuple[str, int, list[str], Any]:
        command, code, args = item
        return command, code, args, console(*command.split(), *args)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(call, calls))
    wrong = []
    for command, code, args, result in results:
        if result.returncode != code or "Traceback" in result.stderr:
            wrong.append(f"daycare {command} {' '.join(args)}: {result.returncode} != {code}")
        elif code in (3, 4) and command != "task lint" and not result.stderr.startswith("error"):
            # (lint's report of the errors is its output, on stdout)
            wrong.append(f"daycare {command} {' '.join(args)}: no `error:` line")
    assert not wrong, "\n".join(wrong)
    assert (home / "tasks" / "good.md").read_text() == GOOD  # nothing was changed on the way
