"""A temp daycare home for CLI tests, and a runner that calls the Typer app in-process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from daycare_cli.cli.app import build_app

Run = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DAYCARE_HOME; nothing of the real user's setup leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAYCARE_HOME", str(home))
    for name in ("DAYCARE_CONFIG", "DAYCARE_TASKS_DIR", "VISUAL", "EDITOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TZ", "UTC")  # the system zone tasks without one fall back to
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture
def tasks(home: Path) -> Path:
    """The tasks directory of the temp home (created)."""
    path = home / "tasks"
    path.mkdir()
    return path


@pytest.fixture
def run(home: Path) -> Run:
    """`run("task", "ls", input=...)` -> the Result of `daycare task ls`."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(build_app(), list(args), input=input, env=env, prog_name="daycare")

    return invoke


@pytest.fixture
def write(tasks: Path) -> Callable[[str, str], Path]:
    """`write("id", text)`: a task file written by hand, as a person or a git checkout would."""

    def write_task(task_id: str, text: str) -> Path:
        path = tasks / f"{task_id}.md"
        path.write_bytes(text.encode("utf-8"))
        return path

    return write_task


@pytest.fixture
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """`editor(code)` sets $EDITOR to a Python script that runs `code` on the file.

    `code` sees `text` (the file's text, to change) and `calls` (1 on the first run, 2 on
    the second...). Returns the file where the script counts its calls.
    """

    def make(code: str) -> Path:
        script = tmp_path / "editor.py"
        counter = tmp_path / "editor.calls"
        script.write_text(
            "import pathlib, sys\n"
            "path = pathlib.Path(sys.argv[1])\n"
            f"counter = pathlib.Path({str(counter)!r})\n"
            "calls = int(counter.read_text()) + 1 if counter.exists() else 1\n"
            "counter.write_text(str(calls))\n"
            "text = path.read_text()\n" + code + "\npath.write_text(text)\n"
        )
        monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
        return counter

    return make


def shows_no_traceback(result: Result) -> bool:
    """True when a command showed no traceback and raised nothing but its exit."""
    return "Traceback" not in result.output and (
        result.exception is None or isinstance(result.exception, SystemExit)
    )


@pytest.fixture
def no_traceback() -> Callable[[Result], bool]:
    """User errors never show a traceback: `assert no_traceback(result)`."""
    return shows_no_traceback


CONSOLE_SCRIPT = Path(sys.executable).with_name("daycare")
Console = Callable[..., subprocess.CompletedProcess[str]]


def console_command() -> list[str]:
    """The installed `daycare` console script (else the same entry point through python)."""
    if CONSOLE_SCRIPT.exists():
        return [str(CONSOLE_SCRIPT)]
    return [sys.executable, "-m", "daycare_cli.cli.entry"]


@pytest.fixture
def console(home: Path) -> Console:
    """`console("task", "ls")`: the real console script in a subprocess against the temp
    home, at 80 columns, its output piped (so: no terminal, no colour)."""
    import os

    def invoke(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "DAYCARE_HOME": str(home), "COLUMNS": "80", **(env or {})}
        return subprocess.run(
            [*console_command(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=full,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    return invoke
