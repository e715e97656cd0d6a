"""Whole runs (`Runner.run`) whose model speaks OpenAI's protocol: the fake server.

What a run records of its model: the status and error of honest outcomes, the HTTP
attempts in log.jsonl, and never a secret in prompt.md, response.md, log.jsonl, the run
row, the event ledger, the events a listener sees, or a notification.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from inbox import Inbox
from openai_fake import FakeOpenAI, Reply, error, html_page, text, tool_call
from runhome import Home, log_events, run_file

from daycare_cli.config import load_config
from daycare_cli.run.runner import Runner, RunRequest

# apprise imports the stdlib's imghdr, deprecated since Python 3.11: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

SECRET = "tok-Very-Secret-5150"
OTHER = "cfg-Other-Secret-8080"  # in config, printed by no block, only echoed by the model

SECRET_TASK = """\
---
execute: true
model: fake
{extra}notify: ["{url}"]
notify_on: [response, failure, skip]
env:
  TOKEN: "Bearer ${{secret:api_token}}"
---
<run_python>
import os
print("the header is", os.environ["TOKEN"])
</run_python>
Check the service with the header above.
"""


def configure_secrets(home: Home) -> None:
    home.configure(f'[secrets]\napi_token = "{SECRET}"\nother = "{OTHER}"\n')


def everything_recorded(home: Home, run_id: str, listened: list[dict[str, Any]]) -> str:
    """Every record of a run as one text: its files, its row, the ledger, what a listener saw."""
    run = home.state.get_run(run_id)
    assert run is not None and run.run_dir is not None
    files = [
        run_file(run, name).read_text("utf-8")
        for name in ("prompt.md", "response.md", "log.jsonl")
        if run_file(run, name).exists()
    ]
    row = json.dumps([run.output, run.response, run.error, run.skip_reason])
    ledger = json.dumps([(e.kind, e.detail) for e in home.state.list_events(limit=500)])
    return "\n".join([*files, row, ledger, json.dumps(listened)])


def run_listening(home: Home, task_text: str) -> tuple[Any, list[dict[str, Any]]]:
    """One run with an event listener (as the daemon's streaming API has)."""
    listened: list[dict[str, Any]] = []
    runner = Runner(
        home.paths, load_config(home.paths.config_file), home.state, on_event=listened.append
    )
    run = asyncio.run(runner.run(RunRequest(task=home.task(task_text))))
    assert run is not None
    return run, listened


@pytest.mark.parametrize("redact", [None, True, False])
def test_a_secret_is_in_no_record_of_the_run(
    home: Home, fake_openai: FakeOpenAI, inbox: Inbox, redact: bool | None
) -> None:
    configure_secrets(home)
    extra = "" if redact is None else f"redact_model_input: {str(redact).lower()}\n"
    # The model repeats both secrets and keeps a note with one.
    fake_openai.script(
        tool_call("remember", {"note": f"header was {SECRET}"}),
        text(f"Checked with {SECRET}; the other is {OTHER}."),
    )
    run, listened = run_listening(home, SECRET_TASK.format(extra=extra, url=inbox.url))
    assert (run.status, run.error) == ("succeeded", None)
    # The block did get the secret: the model was sent it when redaction is off.
    sent = fake_openai.requests[0].content("user")
    if redact is False:
        assert f"the header is Bearer {SECRET}" in sent
    else:
        assert "the header is Bearer [redacted]" in sent and SECRET not in sent
    recorded = everything_recorded(home, run.id, listened)
    assert SECRET not in recorded and OTHER not in recorded
    assert run.output.startswith("the header is Bearer [redacted]\n")
    assert run_file(run, "prompt.md").read_text("utf-8") == run.output
    assert run.response == "Checked with [redacted]; the other is [redacted]."
    assert run_file(run, "response.md").read_text("utf-8") == run.response
    memory = (home.paths.workspace("t") / "memory.md").read_text("utf-8")
    assert memory.endswith(": header was [redacted]\n")
    calls = next(e for e in log_events(run) if e["event"] == "model.end")["tool_calls"]
    assert calls[0]["arguments"] == {"note": "header was [redacted]"}
    assert [m["message"] for m in inbox.messages] == [run.response]


def test_a_secret_in_a_model_error_is_redacted(
    home: Home, fake_openai: FakeOpenAI, inbox: Inbox
) -> None:
    configure_secrets(home)
    fake_openai.script(*[error(500, f"bad header Bearer {SECRET}")] * 3)
    run, listened = run_listening(home, SECRET_TASK.format(extra="", url=inbox.url))
    assert run.status == "failed"
    assert run.error == (
        "model 'fake' failed: InternalServerError: Error code: 500 - bad header Bearer [redacted]"
    )
    assert SECRET not in everything_recorded(home, run.id, listened)
    assert [m["message"] for m in inbox.messages] == [run.error]


def test_retries_and_attempts_are_in_the_run_log(home: Home, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(error(500), error(500), text("Up again."))
    run = home.run(home.task("---\nmodel: fake\n---\nIs the service up?\n"))
    assert (run.status, run.response) == ("succeeded", "Up again.")
    events = log_events(run)
    requests = [
        (e["turn"], e["attempt"], e["status"]) for e in events if e["event"] == "model.request"
    ]
    assert requests == [(1, 1, 500), (1, 2, 500), (1, 3, 200)]
    end = next(e for e in events if e["event"] == "model.end")
    assert (end["attempts"], end["retries"], end["status"]) == (3, 2, "succeeded")
    names = [e["event"] for e in events]
    assert names.index("model.start") < names.index("model.request") < names.index("model.end")


def test_an_html_page_fails_the_run_and_the_notification_says_why(
    home: Home, fake_openai: FakeOpenAI, inbox: Inbox
) -> None:
    fake_openai.script(html_page())
    task = home.task(f'---\nmodel: fake\nnotify: ["{inbox.url}"]\n---\nSummarize the day for me.\n')
    run = home.run(task)
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("model 'fake' returned nothing (HTTP 200")
    assert run.response is None and not run_file(run, "response.md").exists()
    # The failure is delivered with its reason, never the prompt as if it were an answer.
    assert inbox.titles() == ["t: failed"]
    assert inbox.messages[0]["message"] == run.error
    assert "Summarize the day" not in inbox.messages[0]["message"]


def test_a_malformed_tool_call_twice_fails_the_run_naming_it(
    home: Home, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(tool_call("remember", "{oops"), tool_call("remember", "{oops"))
    run = home.run(home.task("---\nmodel: fake\n---\nGo.\n"))
    assert run.status == "failed"
    assert run.error is not None
    assert "malformed tool-call arguments twice" in run.error
    assert "tool call remember (call_0)" in run.error


def test_a_slow_model_is_cut_by_run_timeout(home: Home, fake_openai: FakeOpenAI) -> None:
    # A first run loads llm and its plugins, which must not eat the 1 s of the second.
    fake_openai.script(text("warm"))
    assert home.run(home.task("---\nmodel: fake\n---\nGo.\n", "warm")).status == "succeeded"
    fake_openai.script(Reply(text="too late", delay=30))
    run = home.run(home.task("---\nmodel: fake\nrun_timeout: 1s\n---\nGo.\n"))
    assert (run.status, run.error) == ("timed_out", "run exceeded its run_timeout of 1s")
    requests = [e for e in log_events(run) if e["event"] == "model.request"]
    assert [(e["attempt"], e["status"]) for e in requests] == [(1, None)]


def test_a_missing_key_fails_before_any_request(
    home: Home, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-real-key")
    run = home.run(home.task("---\nmodel: fake-keyed\n---\nGo.\n"))
    assert run.status == "failed"
    assert run.error == "model 'fake-keyed' has no API key; add one with `llm keys set fake-key`"
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("line", "value"),
    [("", True), ("redact_model_input: false\n", False), ("redactModelInput: false\n", False)],
)
def test_redact_model_input_is_read_from_the_task_file(home: Home, line: str, value: bool) -> None:
    assert home.task(f"---\nmodel: fake\n{line}---\nGo.\n").redact_model_input is value


def test_redact_model_input_must_be_a_boolean(home: Home) -> None:
    from daycare_cli.core.taskfile import TaskFileError

    with pytest.raises(TaskFileError) as caught:
        home.task("---\nredact_model_input: sometimes\n---\nGo.\n")
    assert caught.value.line == 2
    assert "`redact_model_input` must be true or false" in caught.value.message
