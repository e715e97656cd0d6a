"""What blocks print reaches a terminal as text (docs/security.md): no ESC, OSC or bare CR
gets through, and nothing is read as Rich markup, in every command that shows it.
Also: `task expand` gets the same masks as a run, and task ids follow one rule.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daycare_cli.run.sandbox import isolation_level

NASTY = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\rover\\u202eevil"
TASKS = {
    "loud": (
        "---\nexecute: true\n---\n"
        "<run_python>\n"
        f"print({NASTY!r}.encode().decode('unicode_escape'))\n"
        "</run_python>\n"
        "<run_python>\n"
        f"raise ValueError({NASTY!r}.encode().decode('unicode_escape') + '[bold]x[/] [/]')\n"
        "</run_python>\n"
    ),
    "skipper": (
        "---\nexecute: true\n---\n"
        "<run_python>\n"
        "skip('[bold]x[/] [/] \\x1b[2J\\rgone')\n"
        "</run_python>\n"
    ),
}


def _all_output(result: Any) -> str:
    text = result.stdout
    try:
        text += result.stderr
    except ValueError:  # stderr mixed into stdout
        pass
    return text


def _clean(result: Any) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    out = _all_output(result)
    assert "\x1b" not in out
    assert "\r" not in out
    assert "\u202e" not in out
    return out


@pytest.fixture
def ran(run: Any, write: Any) -> dict[str, Any]:
    """Both tasks run once (locally); the results by task id."""
    for task_id, text in TASKS.items():
        write(task_id, text)
    return {task_id: run("task", "run", task_id) for task_id in TASKS}


def test_task_run_shows_block_text_as_text(ran: dict[str, Any]) -> None:
    loud = _clean(ran["loud"])
    assert "\\x1b]0;pwned\\x07" in loud
    assert "[bold]x[/] [/]" in loud  # as written, not as markup
    skipper = _clean(ran["skipper"])
    assert "[bold]x[/] [/] \\x1b[2J\\rgone" in skipper


@pytest.mark.parametrize(
    "args",
    [("runs", "ls"), ("logs",), ("events",), ("runs", "ls", "--task", "skipper")],
    ids=["runs-ls", "logs", "events", "runs-ls-task"],
)
def test_history_commands_show_block_text_as_text(run: Any, ran: dict[str, Any], args) -> None:
    out = _clean(run(*args))
    if args[0] == "runs":
        assert "[bold]x[/]" in out


def test_runs_show_shows_block_text_as_text(run: Any, ran: dict[str, Any]) -> None:
    for task_id in TASKS:
        rows = json.loads(run("runs", "ls", "--task", task_id, "--json").stdout)
        out = _clean(run("runs", "show", rows[0]["id"]))
        assert "\\x1b" in out


def test_task_expand_shows_block_text_as_text(run: Any, ran: dict[str, Any]) -> None:
    out = _clean(run("task", "expand", "loud"))
    assert "\\x1b[31mred\\rover\\u202eevil" in out
    _clean(run("task", "expand", "skipper"))


# -- task expand gets the launch plan of a run ---------------------------------------------


@pytest.fixture
def var_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A daycare home under /var/tmp, which the view shows read-only: only the masks
    keep a block out of it (a home under /tmp is hidden by the private /tmp anyway)."""
    root = Path(tempfile.mkdtemp(prefix="daycare-cli-", dir="/var/tmp"))
    root.chmod(0o755)
    home = root / "home"
    (home / "tasks").mkdir(parents=True)
    home.chmod(0o755)
    monkeypatch.setenv("DAYCARE_HOME", str(home))
    try:
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_task_expand_cannot_read_daycare_state_or_config(run: Any, var_home: Path) -> None:
    if isolation_level()[0] != "bubblewrap":
        pytest.skip(f"bubblewrap isolation unavailable: {isolation_level()[1]}")
    (var_home / "config.toml").write_text('[secrets]\nhook = "config-secret-9931"\n')
    (var_home / "config.toml").chmod(0o644)
    assert run("webhook", "url", "spy").exit_code != 0  # no such task yet: nothing issued
    (var_home / "tasks" / "spy.md").write_text(
        "---\nexecute: true\ntriggers: [{webhook: true}]\n---\n<run_python>\n"
        "for p in ('config.toml', 'state.db', 'tasks/spy.md'):\n"
        "    try:\n"
        f"        print(p, open({str(var_home)!r} + '/' + p, errors='replace').read())\n"
        "    except OSError as exc:\n"
        "        print(p, type(exc).__name__)\n"
        "</run_python>\n"
    )
    url = run("webhook", "url", "spy")
    assert url.exit_code == 0, url.output
    token = url.stdout.strip().rsplit("/", 1)[1]
    (var_home / "state.db").chmod(0o644)
    out = _clean(run("task", "expand", "spy"))
    assert "config.toml FileNotFoundError" in out
    assert "state.db FileNotFoundError" in out
    assert "tasks/spy.md FileNotFoundError" in out
    assert "config-secret-9931" not in out and token not in out


def test_task_expand_fails_closed_without_bubblewrap(run: Any, write: Any, home: Path) -> None:
    (home / "config.toml").write_text('[sandbox]\nbwrap = "/nonexistent/bwrap"\n')
    write("x", "---\nexecute: true\n---\n<run_python>\nprint('ran')\n</run_python>\n")
    env = {k: v for k, v in os.environ.items() if k != "DAYCARE_SANDBOX"}
    result = run("task", "expand", "x", env={**env, "DAYCARE_SANDBOX": ""})
    assert result.exit_code == 1
    out = _all_output(result)
    assert "bubblewrap cannot run here" in out and "sandbox.isolation reduced" in out
    assert "ran" not in result.stdout


# -- one rule for task ids -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["../../outside/evil", "..%2F..%2Foutside%2Fevil", "Upper", "ok\n", "x_y", "a" * 64]
)
def test_bad_task_ids_are_not_found_at_the_command_line(
    run: Any, tasks: Path, tmp_path: Path, bad: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.md").write_text(
        "---\nexecute: true\n---\n<run_python>\nprint(1)\n</run_python>"
    )
    for args in (("task", "run", bad), ("task", "show", bad), ("task", "expand", bad)):
        result = run(*args)
        assert result.exit_code == 3, (args, result.output)
        assert "task ids are lowercase letters" in _all_output(result)
    assert not (tasks.parent / "workspaces").exists()
