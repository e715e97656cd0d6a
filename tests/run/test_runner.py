"""Tests for run/runner.py: whole runs through `Runner.run` against a temp home.

Everything is real: the task file parser, the state database, the sandbox (bubblewrap
where it works), the `llm` library with the llm-echo model, apprise posting to an HTTP
server on loopback. llm-echo answers with a JSON dump of what it received; a prompt that
is itself a JSON object `{"prompt": ..., "tool_calls": [...]}` makes it call tools.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from inbox import Inbox
from runhome import Home, log_events, run_file

from daycare_cli.config import load_config
from daycare_cli.run.runner import Runner, RunRequest

# apprise imports the stdlib's imghdr, deprecated since Python 3.11: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

SECRET = "s3cr3t-Value-9137"


# -- the seed's examples ---------------------------------------------------------------

METRICS = """\
---
name: Metrics digest
execute: true
model: none
---
<run_python>
import json, pathlib

metrics = json.loads(pathlib.Path("metrics.json").read_text())
for key, value in sorted(metrics.items()):
    print(f"- {key}: {value}")
</run_python>

Write a three-line digest of the metrics above for the team channel.
"""


def test_daily_metrics_block_is_replaced_by_its_printed_lines(home: Home) -> None:
    task = home.task(METRICS, "metrics-digest")
    files = home.paths.workspace("metrics-digest") / "files"
    files.mkdir(parents=True)
    (files / "metrics.json").write_text(json.dumps({"signups": 42, "errors": 3}))
    run = home.run(task)
    expected = (
        "- errors: 3\n- signups: 42\n\n"
        "Write a three-line digest of the metrics above for the team channel.\n"
    )
    assert (run.status, run.error, run.trigger) == ("succeeded", None, "manual")
    assert run.output == expected
    assert run_file(run, "prompt.md").read_text("utf-8") == expected
    assert not run_file(run, "response.md").exists()
    assert run.started_at is not None and run.finished_at is not None
    assert run.duration_ms is not None and run.duration_ms >= 0
    ends = [e for e in log_events(run) if e["event"] == "block.end"]
    assert [(e["block"], e["exit_code"], e["error"]) for e in ends] == [(0, 0, None)]
    assert home.state.get_run(run.id) == run


ERROR_MONITOR = """\
---
name: Error monitor
execute: true
model: echo
---
{"prompt": "<run_python>print('Recent errors: 0')</run_python> If there are 0 recent \
errors, call the skip tool.", "tool_calls": [{"name": "skip", "arguments": {"reason": \
"no recent errors"}}]}
"""


def test_error_monitor_model_skip_ends_the_run_after_one_inference(home: Home) -> None:
    run = home.run(home.task(ERROR_MONITOR, "error-monitor"))
    assert (run.status, run.skip_reason, run.error) == ("skipped", "no recent errors", None)
    # The block ran and the model saw its output.
    prompt = json.loads(run_file(run, "prompt.md").read_text("utf-8"))
    assert prompt["prompt"].startswith("Recent errors: 0 If there are 0")
    models = [e for e in log_events(run) if e["event"] == "model.end"]
    assert len(models) == 1
    calls = models[0]["tool_calls"]
    assert [(c["turn"], c["name"], c["status"]) for c in calls] == [(1, "skip", "ok")]
    assert models[0]["status"] == "skipped"
    # A skipped run has no response: nothing is delivered.
    response = run_file(run, "response.md")
    assert not response.exists() or response.read_text("utf-8") == ""
    assert run.response is None
    assert run.model == "echo"


def test_block_skip_ends_the_run_before_the_model(home: Home) -> None:
    task = home.task(
        "---\nexecute: true\nmodel: echo\n---\n"
        "<run_python>skip('no recent errors')</run_python>\n"
        "<run_python>open('second-ran', 'w')</run_python>\nSummarize.\n"
    )
    run = home.run(task)
    assert (run.status, run.skip_reason) == ("skipped", "no recent errors")
    events = [e["event"] for e in log_events(run)]
    assert "model.start" not in events
    assert events.count("block.start") == 1
    assert not (home.paths.workspace("t") / "files" / "second-ran").exists()
    assert run.output is None and run.response is None


GIT_STATUS = """\
---
name: Git status on push
triggers:
  - webhook: true
execute: true
model: none
---
<run_python>
if payload is None:
    print("No payload: fired by hand.")
else:
    commits = payload.get("commits", [])
    print(f"Push to {payload['ref']} with {len(commits)} commit(s):")
    for c in commits:
        print(f"- {c['id'][:7]} {c['message'].splitlines()[0]}")
</run_python>

Summarise the push above in one sentence for the changelog.
"""


def test_git_status_webhook_block_sees_the_payload(home: Home) -> None:
    task = home.task(GIT_STATUS, "git-status")
    payload = json.dumps(
        {"ref": "refs/heads/main", "commits": [{"id": "abcdef123", "message": "Fix it\n\nLong"}]}
    ).encode()
    run = home.run(task, trigger="webhook", trigger_id="webhook", payload=payload)
    assert run.status == "succeeded"
    assert run.output is not None
    assert run.output.startswith("Push to refs/heads/main with 1 commit(s):\n- abcdef1 Fix it\n")
    assert run_file(run, "payload.json").read_bytes() == payload
    assert (run.trigger, run.trigger_id) == ("webhook", "webhook")


def test_git_status_without_payload_says_fired_by_hand(home: Home) -> None:
    run = home.run(home.task(GIT_STATUS, "git-status"))
    assert run.output is not None and run.output.startswith("No payload: fired by hand.\n")
    assert not run_file(run, "payload.json").exists()


def test_syntax_error_block_becomes_exec_error_and_the_next_block_runs(home: Home) -> None:
    task = home.task(
        "---\nexecute: true\nmodel: none\n---\n"
        "Before.\n<run_python>\ndef broken(:\n    pass\n</run_python>\nMiddle.\n"
        "<run_python>print('second block ran')</run_python>\nAfter.\n"
    )
    run = home.run(task)
    assert run.output is not None
    before, rest = run.output.split("<exec_error>SyntaxError: ", 1)
    message, after = rest.split("</exec_error>", 1)
    assert before == "Before.\n"
    assert message and "\n" not in message
    assert after == "\nMiddle.\nsecond block ran\nAfter.\n"
    # A block error fails the run (the prompt is still recorded in full).
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("block 1: SyntaxError: ")
    assert run_file(run, "prompt.md").read_text("utf-8") == run.output
    ends = [e for e in log_events(run) if e["event"] == "block.end"]
    assert [e["error"] is None for e in ends] == [False, True]
    assert ends[0]["exit_code"] != 0


def test_expansion_is_single_pass(home: Home) -> None:
    task = home.task(
        "---\nexecute: true\nmodel: none\n---\n"
        # The tag is assembled at run time: written out, it would close the block early.
        "<run_python>tag = 'run_' + 'python'; print(f'<{tag}>print(1)</{tag}>')</run_python>\n"
    )
    run = home.run(task)
    assert (run.status, run.output) == ("succeeded", "<run_python>print(1)</run_python>\n")
    assert [e["event"] for e in log_events(run)].count("block.start") == 1


def test_blocks_stay_verbatim_without_execute(home: Home) -> None:
    body = "<run_python>print(1)</run_python>\nRemember.\n"
    run = home.run(home.task(f"---\nmodel: none\n---\n{body}"))
    assert (run.status, run.output) == ("succeeded", body)
    assert "block.start" not in [e["event"] for e in log_events(run)]


# -- the model hand-off ----------------------------------------------------------------


def test_model_none_makes_the_expanded_prompt_the_output(home: Home) -> None:
    home.configure('model = "echo"\n')
    run = home.run(home.task("---\nmodel: none\n---\nWater the plants.\n"))
    assert (run.status, run.output, run.response, run.model) == (
        "succeeded",
        "Water the plants.\n",
        None,
        None,
    )
    assert not run_file(run, "response.md").exists()
    assert "model.start" not in [e["event"] for e in log_events(run)]


@pytest.mark.parametrize("where", ["task", "config"])
def test_model_response_is_recorded_with_tokens(home: Home, where: str) -> None:
    if where == "config":
        home.configure('model = "echo"\n')
        text = "---\nexecute: true\n---\n<run_python>print(6 * 7)</run_python> is the answer.\n"
    else:
        text = (
            "---\nexecute: true\nmodel: echo\n---\n"
            "<run_python>print(6 * 7)</run_python> is the answer.\n"
        )
    run = home.run(home.task(text))
    assert (run.status, run.error, run.model) == ("succeeded", None, "echo")
    assert run.output == "42 is the answer.\n"
    reply = run_file(run, "response.md").read_text("utf-8")
    assert reply == run.response
    echoed = json.loads(reply)
    assert echoed["prompt"] == "42 is the answer.\n"
    assert "Task: t (id: t)" in echoed["system"]
    assert run.input_tokens is not None and run.input_tokens > 0
    assert run.output_tokens is not None and run.output_tokens > 0
    end = next(e for e in log_events(run) if e["event"] == "model.end")
    assert (end["input_tokens"], end["output_tokens"]) == (run.input_tokens, run.output_tokens)


def test_unknown_model_fails_the_run_with_a_clear_error(home: Home) -> None:
    run = home.run(home.task("---\nmodel: no-such-model-xyz\n---\nHello.\n"))
    assert run.status == "failed"
    assert run.error is not None and "unknown model 'no-such-model-xyz'" in run.error
    assert run.output == "Hello.\n"


# -- limits ----------------------------------------------------------------------------


def test_run_timeout_ends_the_run_timed_out(
    home: Home, alive_with: Callable[[str], list[int]]
) -> None:
    marker = f"DAYCARE_TEST_MARK_{uuid.uuid4().hex}"
    task = home.task(
        "---\nexecute: true\nmodel: none\nrun_timeout: 1s\ntimeout: 30s\n"
        f"env:\n  MARK: {marker}\n---\n"
        "<run_python>import time; time.sleep(30)</run_python>\n"
    )
    started = time.monotonic()
    run = home.run(task)
    assert time.monotonic() - started < 10
    assert alive_with(marker) == []  # the block's process went with the run
    assert run.status == "timed_out"
    assert run.error == "run exceeded its run_timeout of 1s"
    assert run.finished_at is not None
    assert home.state.running_runs(include_queued=True) == []
    # The lock was released: the next run of the task proceeds.
    again = home.run(home.task("---\nmodel: none\n---\nok\n"))
    assert again.status == "succeeded"


# -- secrets ---------------------------------------------------------------------------

SECRET_TASK = """\
---
execute: true
model: none
env:
  API_TOKEN: "Bearer ${secret:api_token}"
---
<run_python>
import os, sys
token = os.environ["API_TOKEN"]
print(f"token length {len(token)}")
print(f"debug: {token}", file=sys.stderr)
</run_python>
"""


def test_env_secret_is_resolved_and_redacted_from_the_log(home: Home) -> None:
    home.configure(f'[secrets]\napi_token = "{SECRET}"\n')
    run = home.run(home.task(SECRET_TASK))
    assert (run.status, run.error) == ("succeeded", None)
    assert run.output == f"token length {len('Bearer ') + len(SECRET)}\n"
    log_text = run_file(run, "log.jsonl").read_text("utf-8")
    assert SECRET not in log_text
    end = next(e for e in log_events(run) if e["event"] == "block.end")
    assert end["stderr"].strip() == "debug: Bearer [redacted]"


def test_secret_in_an_exception_message_is_redacted_from_log_and_row(home: Home) -> None:
    home.configure(f'[secrets]\napi_token = "{SECRET}"\n')
    task = home.task(
        SECRET_TASK + "<run_python>import os; raise PermissionError(os.environ['API_TOKEN'])"
        "</run_python>\n"
    )
    run = home.run(task)
    assert run.status == "failed"
    assert run.error == "block 2: PermissionError: Bearer [redacted]"
    assert SECRET not in run_file(run, "log.jsonl").read_text("utf-8")
    ends = [e for e in log_events(run) if e["event"] == "block.end"]
    assert ends[1]["error"] == "PermissionError: Bearer [redacted]"


def test_missing_secret_fails_the_run_before_any_block(home: Home) -> None:
    run = home.run(home.task(SECRET_TASK))
    assert run.status == "failed"
    assert run.error is not None
    assert "secret 'api_token' is not in config [secrets]" in run.error
    assert "daycare config set secrets.api_token" in run.error
    assert "block.start" not in [e["event"] for e in log_events(run)]


# -- notifications ---------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# apprise strips the trailing newline of a body.
def test_response_is_delivered_to_the_notify_url(home: Home, inbox: Inbox) -> None:
    task = home.task(
        f'---\nname: Reminder\nmodel: none\nnotify: ["{inbox.url}"]\nnotify_on: [response]\n'
        "---\nWater the plants.\n"
    )
    run = home.run(task)
    assert run.status == "succeeded"
    assert [(m["title"], m["message"]) for m in inbox.messages] == [
        ("Reminder: succeeded", "Water the plants.")
    ]
    assert home.events("notify.failed") == []


def test_named_notify_target_comes_from_config(home: Home, inbox: Inbox) -> None:
    home.configure(f'[notify.phone]\nurl = "{inbox.url}"\n')
    task = home.task("---\nmodel: none\nnotify: [phone]\nnotify_on: [success]\n---\nHi.\n")
    home.run(task)
    assert [m["message"] for m in inbox.messages] == ["Hi."]


def test_notify_on_filters_what_is_sent(home: Home, inbox: Inbox) -> None:
    task = home.task(
        f'---\nmodel: none\nnotify: ["{inbox.url}"]\nnotify_on: [failure]\n---\nAll fine.\n'
    )
    assert home.run(task).status == "succeeded"
    assert inbox.messages == []


def test_notification_redacts_secrets(home: Home, inbox: Inbox) -> None:
    home.configure(f'[secrets]\napi_token = "{SECRET}"\n')
    task = home.task(
        "---\nexecute: true\nmodel: none\n"
        f'notify: ["{inbox.url}"]\nnotify_on: [response]\n'
        'env:\n  TOKEN: "${secret:api_token}"\n---\n'
        "<run_python>import os; t = os.environ['TOKEN']; print('token is', t, len(t))"
        "</run_python>\n"
    )
    run = home.run(task)
    # The block got the secret (its length shows), and no record of the run holds it.
    assert run.output == f"token is [redacted] {len(SECRET)}\n"
    assert run_file(run, "prompt.md").read_text("utf-8") == run.output
    assert [m["message"] for m in inbox.messages] == [f"token is [redacted] {len(SECRET)}"]


def test_failing_notify_url_never_fails_the_run(home: Home) -> None:
    url = f"json://127.0.0.1:{closed_port()}/"
    task = home.task(
        f'---\nmodel: none\nnotify: ["{url}", "not a url at all"]\nnotify_on: [response]\n'
        "---\nWater the plants.\n"
    )
    run = home.run(task)
    assert (run.status, run.error) == ("succeeded", None)
    failed = home.events("notify.failed")
    assert [(e.task, e.run) for e in failed] == [("t", run.id)]
    assert failed[0].detail["error"] == "json://…: delivery failed"


STREAK_TASK = """\
---
name: Flaky
execute: true
model: none
notify: ["{url}"]
notify_on: [failure, recovery]
---
<run_python>
import pathlib
if pathlib.Path("broken").exists():
    raise RuntimeError("service down")
print("all good")
</run_python>
"""


def test_failure_streak_notifies_once_and_recovery_once(home: Home, inbox: Inbox) -> None:
    home.configure("failure_streak = 2\n")
    task = home.task(STREAK_TASK.format(url=inbox.url), "flaky")
    broken = home.paths.workspace("flaky") / "files" / "broken"
    broken.parent.mkdir(parents=True)
    broken.touch()
    statuses = [home.run(task).status for _ in range(4)]
    broken.unlink()
    statuses += [home.run(task).status for _ in range(2)]
    assert statuses == ["failed"] * 4 + ["succeeded"] * 2
    # The first failure is announced (notify_on: failure), the streak once at the
    # threshold, then nothing until the recovery, which is announced once.
    assert inbox.titles() == [
        "Flaky: failed",
        "Flaky: failed 2 times in a row",
        "Flaky: recovered",
    ]
    assert "RuntimeError: service down" in inbox.messages[1]["message"]
    assert len(home.events("task.flagged")) == 1
    assert home.state.get_task_state("flaky").failure_streak == 0


# -- retention -------------------------------------------------------------------------

RETENTION_TASK = """\
---
execute: true
model: none
---
<run_python>
import pathlib
counter = pathlib.Path("count")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if n == 1:
    print("first run succeeds")
elif n == 2:
    raise RuntimeError("second run fails")
else:
    skip(f"run {n} has nothing to say")
</run_python>
"""


def test_retention_keeps_the_newest_runs_and_the_last_success_and_failure(home: Home) -> None:
    home.configure("[retention]\nkeep_runs = 3\n")
    task = home.task(RETENTION_TASK)
    runs = [home.run(task) for _ in range(6)]
    assert [r.status for r in runs] == ["succeeded", "failed"] + ["skipped"] * 4
    kept = {runs[0].id, runs[1].id, runs[3].id, runs[4].id, runs[5].id}
    assert {r.id for r in home.state.list_runs(task="t", limit=100)} == kept
    run_dirs = home.paths.workspace("t") / "runs"
    assert {p.name for p in run_dirs.iterdir()} == kept
    assert not Path(str(runs[2].run_dir)).exists()
    # Files in files/ persist across runs whatever retention does.
    assert (home.paths.workspace("t") / "files" / "count").read_text() == "6"


def test_run_row_is_written_before_the_run_and_events_are_recorded(home: Home) -> None:
    seen: list[dict[str, Any]] = []
    runner = Runner(home.paths, load_config(home.paths.config_file), home.state)

    def listener(record: dict[str, Any]) -> None:
        if record["event"] == "run.start":
            row = home.state.get_run(record["run"])
            seen.append({"status": row.status if row else None})
        seen.append(record)

    runner.on_event = listener
    task = home.task("---\nexecute: true\nmodel: none\n---\n<run_python>1 + 1</run_python>\n")
    run = asyncio.run(runner.run(RunRequest(task=task, slot=None)))
    assert run is not None and run.output == "2\n"
    assert seen[0] == {"status": "running"}
    assert [r["event"] for r in seen[1:]] == [
        "run.start",
        "block.start",
        "block.end",
        "isolation",
        "run.end",
    ]
    kinds = [(e.kind, e.run) for e in home.state.list_events(task="t", limit=10)]
    assert ("run.started", run.id) in kinds and ("run.finished", run.id) in kinds


def test_a_scheduled_slot_runs_once(home: Home) -> None:
    task = home.task('---\nschedule: "0 9 * * *"\nmodel: none\n---\nHi.\n')
    slot = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    first = home.run(task, trigger="schedule", trigger_id="cron", slot=slot)
    assert first.status == "succeeded" and first.slot == slot
    runner = Runner(home.paths, load_config(home.paths.config_file), home.state)
    again = asyncio.run(
        runner.run(RunRequest(task=task, trigger="schedule", trigger_id="cron", slot=slot))
    )
    assert again is None
    assert len(home.state.list_runs(task="t")) == 1
