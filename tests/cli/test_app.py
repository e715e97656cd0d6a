"""The root command: global options anywhere, --version, help."""

from __future__ import annotations

import pytest

from daycare_cli.cli.app import hoist_global_options


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["task", "ls"], ["task", "ls"]),
        (["task", "ls", "--home", "h"], ["--home", "h", "task", "ls"]),
        (["task", "lint", "--tasks-dir=t", "x"], ["--tasks-dir=t", "task", "lint", "x"]),
        (["--config", "c", "next"], ["--config", "c", "next"]),
        (
            ["task", "create", "n", "--", "--home", "h"],
            ["task", "create", "n", "--", "--home", "h"],
        ),
        (["task", "ls", "--home"], ["task", "ls", "--home"]),  # click reports the missing value
    ],
)
def test_hoist_global_options(args: list[str], expected: list[str]) -> None:
    assert hoist_global_options(args) == expected


def test_version_through_typer(run) -> None:
    result = run("--home", "/nonexistent", "--version")
    assert result.exit_code == 0 and result.stdout == "daycare 0.1.0\n"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["task", "--help"],
        ["task", "trigger", "add", "-h"],
        ["cron", "explain", "-h"],
    ],
)
def test_help(run, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code in (0, 2)  # no arguments shows help (click exits 2 for a group)
    assert "Usage: daycare" in result.output


def test_unknown_command_is_a_usage_error(run, no_traceback) -> None:
    result = run("tsak", "ls")
    assert result.exit_code == 2 and no_traceback(result)
