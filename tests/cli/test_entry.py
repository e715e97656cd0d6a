"""The console script: --version and the `task ls` fast path skip Typer; errors render cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daycare_cli import __version__
from daycare_cli.cli.entry import main, parse_fast_daemon_run, parse_fast_ls

REPO = Path(__file__).resolve().parents[2]
GOOD = '---\nname: Good\nschedule: "0 9 * * *"\ntimezone: Europe/Berlin\ntags: [a]\n---\nhello\n'


def daycare(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m daycare_cli.cli.entry ARGS` the way the console script does."""
    return subprocess.run(
        [sys.executable, "-m", "daycare_cli.cli.entry", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        timeout=30,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"daycare {__version__}\n"
    assert __version__ == "0.1.0"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["task", "ls"], ({}, False, [])),
        (["task", "ls", "--json"], ({}, True, [])),
        (["task", "ls", "--tag", "a", "--tag=b"], ({}, False, ["a", "b"])),
        (["--home", "/h", "task", "ls"], ({"home": Path("/h")}, False, [])),
        (["task", "ls", "--tasks-dir=/t", "--config", "/c"],
         ({"tasks_dir": Path("/t"), "config_file": Path("/c")}, False, [])),
        (["task", "ls", "--help"], None),
        (["task", "ls", "-h"], None),
        (["task", "ls", "extra"], None),
        (["task", "ls", "--tag"], None),
        (["--json", "task", "ls"], None),  # --json belongs to ls; Typer reports the misuse
        (["task", "--tag", "a", "ls"], None),
        (["task", "show", "x"], None),
        ([], None),
    ],
)  # fmt: skip
def test_fast_path_takes_only_what_the_typer_command_takes(
    args: list[str], expected: object
) -> None:
    assert parse_fast_ls(args) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["daemon", "run"], ({}, "INFO")),
        (["daemon", "run", "--log-level", "debug"], ({}, "debug")),
        (["--home", "/h", "daemon", "run", "--log-level=WARNING", "--config", "/c"],
         ({"home": Path("/h"), "config_file": Path("/c")}, "WARNING")),
        (["daemon", "run", "--log-level", "debug", "--log-level", "error"], ({}, "error")),
        (["daemon", "run", "--help"], None),
        (["daemon", "run", "--log-level"], None),
        (["daemon", "run", "--log-level="], None),
        (["daemon", "run", "now"], None),
        (["daemon", "--log-level", "debug", "run"], None),  # an option of `run`, not `daemon`
        (["daemon", "start"], None),
        (["daemon"], None),
    ],
)  # fmt: skip
def test_daemon_run_fast_path_takes_only_what_the_typer_command_takes(
    args: list[str], expected: object
) -> None:
    assert parse_fast_daemon_run(args) == expected


def test_daemon_run_fast_path_serves_without_typer(tmp_path: Path) -> None:
    # The daemon started as systemd starts it: it gets ready, honours --log-level, stops
    # on SIGTERM with exit code 0, and never loaded Typer or rich.
    probe = (
        "import os, signal, sys, threading, time\n"
        "from daycare_cli.cli.entry import main\n"
        "def stop():\n"
        "    while not os.path.exists(sys.argv[1]):\n"
        "        time.sleep(0.05)\n"
        "    time.sleep(0.5)\n"
        "    heavy = ('typer', 'rich', 'click', 'pydantic', 'llm', 'apprise')\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "    print('loaded:', loaded, file=sys.stderr, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=stop, daemon=True).start()\n"
        "main(['daemon', 'run', '--log-level', 'warning', '--home', sys.argv[2]])\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    socket = home / "run" / "daycare.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYCARE_")}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(socket), str(home)],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(tmp_path / "xdg")},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "daycare daemon ready: 0 tasks" in result.stderr
    assert " INFO " not in result.stderr  # "stopping", "stopped" are below the level asked
    assert "loaded: []" in result.stderr


def test_daemon_run_fast_path_reports_a_missing_home(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = daycare("--home", str(missing), "daemon", "run", env={})
    assert result.returncode == 3
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr and not missing.exists()


def test_version_and_fast_ls_load_neither_typer_nor_rich(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "good.md").write_text(GOOD)
    probe = (
        "import sys\n"
        "from daycare_cli.cli.entry import main\n"
        "for args in (['--version'], ['task', 'ls'], ['task', 'ls', '--json']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "heavy = ('typer', 'rich', 'pydantic', 'ruamel', 'aiohttp', 'llm', 'apprise')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "DAYCARE_HOME": str(tmp_path)},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"


def test_fast_path_prints_what_the_typer_command_prints(run, write, home: Path) -> None:
    write("good", GOOD)
    write("bad", "---\nname: [Bad\n---\nx\n")
    env = {"DAYCARE_HOME": str(home), "TZ": "UTC", "NO_COLOR": "1"}
    for args in (["task", "ls", "--json"], ["task", "ls", "--json", "--tag", "a"]):
        fast = daycare(*args, env=env)
        typer_path = run(*args)
        assert fast.returncode == typer_path.exit_code == 0
        assert json.loads(fast.stdout) == json.loads(typer_path.stdout)
    fast_table = daycare("task", "ls", env=env).stdout
    assert fast_table.replace(" ", "") == run("task", "ls").stdout.replace(" ", "")


def test_errors_render_without_traceback_and_keep_their_exit_code(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("model = \n")
    env = {"DAYCARE_HOME": str(tmp_path)}
    for args in (["task", "ls"], ["task", "show", "x"]):
        result = daycare(*args, env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ")
        assert "config is not valid TOML" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "config.toml").unlink()
    missing = daycare("task", "show", "nope", env=env)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
