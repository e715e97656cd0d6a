"""The one-shot mode (`daycare task run --file`) as an engine starts it: a subprocess with
no daycare home, no daemon and no prior state. JSON lines out, artifacts in the given
directory, the exit code per status, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daycare_cli.run.oneshot import EXIT_CODES

DAYCARE = [sys.executable, "-m", "daycare_cli"]
REPO = Path(__file__).resolve().parents[2]

ARTIFACT_TASK = """---
name: Artifact writer
schedule: "0 9 * * *"
execute: true
model: none
---
<run_python>
import os, pathlib
(pathlib.Path(os.environ["DAYCARE_ARTIFACTS"]) / "report.txt").write_text("numbers: 42")
print("wrote the report")
</run_python>
"""


def oneshot(
    tmp_path: Path, text: str, *extra: str, env_extra: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    """Run a task file in the one-shot mode with an empty HOME and no DAYCARE_* variables."""
    task = tmp_path / "task" / "job.md"
    task.parent.mkdir(exist_ok=True)
    task.write_text(text)
    user_home = tmp_path / "user"
    user_home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAYCARE_", "XDG_"))}
    env.update(HOME=str(user_home), PYTHONPATH=str(REPO), TMPDIR=str(tmp_path), **(env_extra or {}))
    done = subprocess.run(
        [*DAYCARE, "task", "run", "--file", str(task), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    # Nothing of a daycare home was made anywhere: not in HOME, not left in TMPDIR.
    assert list(user_home.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("daycare-oneshot-")]
    return done.returncode, lines, done.stderr


def test_json_lines_and_artifacts_in_the_given_directory(tmp_path: Path) -> None:
    code, lines, stderr = oneshot(tmp_path, ARTIFACT_TASK, "--artifacts", str(tmp_path / "out"))
    assert code == 0, stderr
    events = [line["event"] for line in lines]
    assert events[0] == "oneshot.start"
    assert "reduced" in lines[0]["note"] and lines[0]["isolation_allowed"] == "reduced"
    assert events[1:3] == ["run.start", "block.start"]
    assert "block.end" in events and "run.end" in events
    assert events[-1] == "run.result"
    result = lines[-1]["result"]
    assert result["status"] == "succeeded"
    assert result["task"] == "job"
    assert result["output"] == "wrote the report\n"
    assert result["isolation"] in ("bubblewrap", "reduced")
    artifacts = Path(lines[-1]["artifacts"])
    assert artifacts == tmp_path / "out" / "job" / result["id"]
    assert (artifacts / "report.txt").read_text() == "numbers: 42"


@pytest.mark.parametrize(
    ("code_line", "status"),
    [("print('ok')", "succeeded"), ("skip('nothing to do')", "skipped"),
     ("raise SystemExit(3)", "failed")],
)  # fmt: skip
def test_exit_code_per_status(tmp_path: Path, code_line: str, status: str) -> None:
    text = f"---\nexecute: true\nmodel: none\n---\n<run_python>\n{code_line}\n</run_python>\n"
    code, lines, _ = oneshot(tmp_path, text)
    assert lines[-1]["result"]["status"] == status
    assert code == EXIT_CODES[status]
    assert code == (1 if status == "failed" else 0)


def test_timed_out_run_exits_1(tmp_path: Path) -> None:
    text = (
        "---\nexecute: true\nmodel: none\nrun_timeout: 1s\n---\n"
        "<run_python>\nimport time\ntime.sleep(5)\n</run_python>\n"
    )
    code, lines, _ = oneshot(tmp_path, text)
    assert (code, lines[-1]["result"]["status"]) == (1, "timed_out")


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    text = (
        "---\nexecute: true\nmodel: none\nenv:\n  TOKEN: ${secret:api-token}\n---\n"
        "<run_python>\nimport os\nprint(len(os.environ['TOKEN']))\n</run_python>\n"
    )
    code, lines, _ = oneshot(tmp_path, text)
    assert code == 1
    assert "api-token" in lines[-1]["result"]["error"]
    code, lines, stderr = oneshot(tmp_path, text, env_extra={"DAYCARE_SECRET_API_TOKEN": "xyz"})
    assert code == 0, stderr
    assert lines[-1]["result"]["output"] == "3\n"
    assert "xyz" not in json.dumps(lines)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [(["--file", "missing.md"], 3, "no task file"),
     (["--artifacts", "out"], 2, "--artifacts goes with --file"),
     (["job", "--file", "x.md"], 2, "not both")],
)  # fmt: skip
def test_usage_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("DAYCARE_HOME", None)
    done = subprocess.run(
        [*DAYCARE, "task", "run", *args], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_invalid_task_file_exits_4_before_anything_runs(tmp_path: Path) -> None:
    code, lines, stderr = oneshot(tmp_path, "---\nschedule: */5 * * * *\n---\nhi\n")
    assert code == 4
    assert lines == []
    assert "job.md:2" in stderr and "quote" in stderr
