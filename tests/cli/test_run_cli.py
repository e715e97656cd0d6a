"""`daycare task run|expand`, `runs ls|show`, `events`, `doctor` through Typer's runner.

Runs are real (sandbox, state database, llm-echo as the model) against the temp home of
conftest.py; assertions look at the JSON the commands print and at the files and rows
they leave behind.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daycare_cli.store.state import State

# docs/cli.md, "JSON output": the stable keys of `runs ls/show --json` and `task run --json`.
RUN_KEYS = {
    "id",
    "task",
    "trigger",
    "slot",
    "attempt",
    "status",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "output",
    "response",
    "error",
    "skip_reason",
    "run_dir",
}

METRICS = """\
---
name: Metrics digest
execute: true
model: none
---
<run_python>
import json, os, pathlib

metrics = json.loads(pathlib.Path("metrics.json").read_text())
for key, value in sorted(metrics.items()):
    print(f"- {key}: {value}")
pathlib.Path(os.environ["DAYCARE_ARTIFACTS"], "digest.txt").write_text("saved")
</run_python>

Write a digest of the metrics above.
"""

PAYLOAD_TASK = """\
---
triggers:
  - webhook: true
execute: true
model: none
---
<run_python>
print(f"payload: {payload!r}")
</run_python>
"""

BROKEN = """\
---
execute: true
model: none
---
<run_python>raise ValueError("bad input")</run_python>
<run_python>print("second")</run_python>
"""


@pytest.fixture(autouse=True)
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))


@pytest.fixture
def metrics(write: Any, home: Path) -> str:
    write("metrics-digest", METRICS)
    files = home / "workspaces" / "metrics-digest" / "files"
    files.mkdir(parents=True)
    (files / "metrics.json").write_text(json.dumps({"errors": 3, "signups": 42}))
    return "metrics-digest"


def rows(home: Path) -> list[Any]:
    with State.open(home / "state.db") as state:
        return state.list_runs(limit=100)


def run_json(run: Any, *args: str) -> tuple[int, dict[str, Any]]:
    result = run(*args, "--json")
    # A block's own traceback may appear inside a JSON string (its stderr); ours never.
    assert not any(line.startswith("Traceback") for line in result.output.splitlines())
    return result.exit_code, json.loads(result.stdout)


def test_task_run_json_has_the_stable_shape_and_matches_the_row(
    run: Any, home: Path, metrics: str
) -> None:
    code, data = run_json(run, "task", "run", metrics, "--local")
    assert code == 0
    assert set(data) >= RUN_KEYS
    assert (data["task"], data["trigger"], data["status"], data["attempt"]) == (
        metrics,
        "manual",
        "succeeded",
        1,
    )
    assert data["output"] == "- errors: 3\n- signups: 42\n\nWrite a digest of the metrics above.\n"
    assert data["slot"] is None and data["error"] is None and data["response"] is None
    for key in ("queued_at", "started_at", "finished_at"):
        assert datetime.fromisoformat(data[key]).utcoffset() is not None
    assert isinstance(data["duration_ms"], int)
    assert Path(data["run_dir"], "prompt.md").read_text() == data["output"]
    [row] = rows(home)
    assert row.to_json() == data


def test_task_run_for_people_ends_with_status_run_id_and_output(
    run: Any, home: Path, metrics: str
) -> None:
    result = run("task", "run", metrics, "--local")
    assert result.exit_code == 0, result.output
    [row] = rows(home)
    first = result.stdout.splitlines()[0]
    assert first.startswith("succeeded in ") and first.endswith(f"run {row.id}")
    assert "- errors: 3\n- signups: 42" in result.stdout
    assert "block 1" in result.stderr  # the per-block progress line


@pytest.mark.parametrize("form", ["inline", "file"])
def test_task_run_passes_the_payload(
    run: Any, write: Any, home: Path, tmp_path: Path, form: str
) -> None:
    write("hook", PAYLOAD_TASK)
    raw = '{"ref": "refs/heads/main", "commits": []}'
    arg = raw
    if form == "file":
        (tmp_path / "push.json").write_text(raw)
        arg = f"@{tmp_path / 'push.json'}"
    code, data = run_json(run, "task", "run", "hook", "--local", "--payload", arg)
    assert code == 0
    assert data["output"] == "payload: {'ref': 'refs/heads/main', 'commits': []}\n"
    assert Path(data["run_dir"], "payload.json").read_text() == raw


def test_task_run_with_an_unreadable_payload_file_is_a_usage_error(
    run: Any, write: Any, home: Path, tmp_path: Path, no_traceback: Any
) -> None:
    write("hook", PAYLOAD_TASK)
    result = run("task", "run", "hook", "--local", "--payload", f"@{tmp_path / 'missing.json'}")
    assert result.exit_code == 2
    assert no_traceback(result)
    assert "cannot read payload file" in result.output
    assert not (home / "state.db").exists() or rows(home) == []


def test_failed_run_exits_1(run: Any, write: Any, home: Path) -> None:
    write("broken", BROKEN)
    code, data = run_json(run, "task", "run", "broken", "--local")
    assert code == 1
    assert data["status"] == "failed"
    assert data["output"] == "<exec_error>ValueError: bad input</exec_error>\nsecond\n"
    assert data["error"] == "block 1: ValueError: bad input"
    human = run("task", "run", "broken", "--local")
    assert human.exit_code == 1
    assert "error: block 1: ValueError: bad input" in human.stdout
    assert [r.status for r in rows(home)] == ["failed", "failed"]


def test_task_run_of_an_unknown_task_exits_3(run: Any, tasks: Path, no_traceback: Any) -> None:
    result = run("task", "run", "nope", "--local")
    assert result.exit_code == 3
    assert no_traceback(result)


def test_task_run_with_the_echo_model_records_the_response(
    run: Any, write: Any, home: Path
) -> None:
    write("ask", "---\nmodel: echo\n---\nHow are the plants?\n")
    code, data = run_json(run, "task", "run", "ask", "--local")
    assert code == 0
    assert json.loads(data["response"])["prompt"] == "How are the plants?\n"
    assert Path(data["run_dir"], "response.md").read_text() == data["response"]
    assert data["input_tokens"] > 0


def test_task_expand_prints_the_expanded_prompt_and_records_no_run(
    run: Any, write: Any, home: Path, metrics: str
) -> None:
    # A model is named: expand must not call it.
    write("metrics-digest", METRICS.replace("model: none", "model: no-such-model-xyz"))
    result = run("task", "expand", metrics)
    assert result.exit_code == 0, result.output
    assert result.stdout == "- errors: 3\n- signups: 42\n\nWrite a digest of the metrics above.\n"
    assert not (home / "state.db").exists() or rows(home) == []
    assert not (home / "workspaces" / metrics / "runs").exists()


def test_task_expand_with_a_payload(run: Any, write: Any, tmp_path: Path) -> None:
    write("hook", PAYLOAD_TASK)
    (tmp_path / "p.json").write_text('{"n": 1}')
    result = run("task", "expand", "hook", "--payload", f"@{tmp_path / 'p.json'}")
    assert (result.exit_code, result.stdout) == (0, "payload: {'n': 1}\n")


def test_runs_ls_lists_newest_first_with_filters(
    run: Any, write: Any, home: Path, metrics: str
) -> None:
    write("broken", BROKEN)
    for task in (metrics, "broken", metrics):
        run("task", "run", task, "--local", "--json")
    code, listed = run_json(run, "runs", "ls")
    assert code == 0
    assert [(r["task"], r["status"]) for r in listed] == [
        (metrics, "succeeded"),
        ("broken", "failed"),
        (metrics, "succeeded"),
    ]
    assert all(set(r) >= RUN_KEYS for r in listed)
    queued = [datetime.fromisoformat(r["queued_at"]) for r in listed]
    assert queued == sorted(queued, reverse=True)
    _, only = run_json(run, "runs", "ls", "--task", "broken")
    assert [r["task"] for r in only] == ["broken"]
    _, failed = run_json(run, "runs", "ls", "--status", "failed")
    assert [r["status"] for r in failed] == ["failed"]
    _, one = run_json(run, "runs", "ls", "--limit", "1")
    assert [r["id"] for r in one] == [listed[0]["id"]]
    table = run("runs", "ls")
    assert table.exit_code == 0 and "broken" in table.stdout and "failed" in table.stdout


def test_runs_show_json_has_blocks_and_artifacts(
    run: Any, write: Any, home: Path, metrics: str
) -> None:
    _, ran = run_json(run, "task", "run", metrics, "--local")
    code, shown = run_json(run, "runs", "show", ran["id"])
    assert code == 0
    assert {k: shown[k] for k in RUN_KEYS} == {k: ran[k] for k in RUN_KEYS}
    [block] = shown["blocks"]
    assert (block["block"], block["exit_code"], block["error"]) == (0, 0, None)
    assert isinstance(block["duration_ms"], int) and block["duration_ms"] >= 0
    assert shown["artifacts"] == ["digest.txt"]

    write("broken", BROKEN)
    _, bad = run_json(run, "task", "run", "broken", "--local")
    _, shown = run_json(run, "runs", "show", bad["id"][:-2])  # a unique prefix will do
    assert shown["id"] == bad["id"]
    assert [(b["block"], b["error"]) for b in shown["blocks"]] == [
        (0, "ValueError: bad input"),
        (1, None),
    ]
    assert shown["blocks"][0]["exit_code"] != 0
    assert shown["artifacts"] == []
    human = run("runs", "show", bad["id"])
    assert human.exit_code == 0
    assert "block 1: exit" in human.stdout and "ValueError: bad input" in human.stdout
    # The failing block's traceback (its stderr) is shown, pointing at the block's line.
    assert "Traceback" in shown["blocks"][0]["stderr"]
    assert 'File "<block>", line' in human.stdout


def test_runs_show_of_an_unknown_run_exits_3(run: Any, home: Path, no_traceback: Any) -> None:
    result = run("runs", "show", "20990101T000000Z-0000")
    assert result.exit_code == 3
    assert no_traceback(result)
    assert "no run" in result.output


def test_events_json_lists_the_runs_of_a_task(
    run: Any, write: Any, home: Path, metrics: str
) -> None:
    _, ran = run_json(run, "task", "run", metrics, "--local")
    write("broken", BROKEN)
    run("task", "run", "broken", "--local")
    code, events = run_json(run, "events", "--task", metrics)
    assert code == 0
    assert all(set(e) == {"id", "at", "actor", "kind", "task", "run", "detail"} for e in events)
    mine = {(e["kind"], e["run"], e["actor"]) for e in events}
    assert {("run.started", ran["id"], "cli"), ("run.finished", ran["id"], "cli")} <= mine
    assert {e["task"] for e in events} == {metrics}
    finished = next(e for e in events if e["kind"] == "run.finished")
    assert finished["detail"]["status"] == "succeeded"


def checks(data: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert all(set(c) == {"name", "level", "detail"} for c in data)
    return {c["name"]: c for c in data}


def test_doctor_json_reports_python_isolation_model_and_paths(
    run: Any, home: Path, tasks: Path
) -> None:
    (home / "config.toml").write_text('model = "echo"\n')
    (home / "config.toml").chmod(0o600)
    code, data = run_json(run, "doctor")
    assert code == 0
    found = checks(data)
    for name in ("python", "bubblewrap", "isolation", "model", "home", "tasks", "config"):
        assert name in found, name
    assert found["isolation"]["detail"].split()[0] in ("bubblewrap", "reduced")
    assert found["model"]["level"] == "ok" and "'echo'" in found["model"]["detail"]
    assert found["home"]["detail"] == str(home)
    assert found["config"]["level"] == "ok"


def test_doctor_fails_for_an_unknown_model_and_warns_on_an_open_config(
    run: Any, home: Path
) -> None:
    (home / "config.toml").write_text('model = "no-such-model-xyz"\n')
    (home / "config.toml").chmod(0o644)
    code, data = run_json(run, "doctor")
    assert code == 1
    found = checks(data)
    assert found["model"]["level"] == "fail"
    assert "unknown model 'no-such-model-xyz'" in found["model"]["detail"]
    assert found["config"]["level"] == "warn" and "chmod 600" in found["config"]["detail"]


def test_cli_changes_are_in_the_audit_ledger(run, home) -> None:
    """create, update, disable and delete each leave a `cli` event naming the task."""
    import sqlite3

    assert run("task", "create", "Audit me", "--every", "1h", "--prompt", "hi").exit_code == 0
    assert run("task", "update", "audit-me", "--every", "2h").exit_code == 0
    assert run("task", "disable", "audit-me").exit_code == 0
    assert run("task", "delete", "audit-me", "--yes").exit_code == 0
    db = sqlite3.connect(home / "state.db")
    kinds = [
        row[0]
        for row in db.execute(
            "SELECT kind FROM events WHERE actor = 'cli' AND task = 'audit-me' ORDER BY id"
        )
    ]
    assert kinds == ["task.created", "task.updated", "task.updated", "task.archived"]
