"""The model hand-off through a real provider protocol: OpenAI's chat completions.

`llm` talks to the fake server of openai_fake.py with its own OpenAI client (the openai
package), configured as a user would (extra-openai-models.yaml with an `api_base`).
What providers do and llm-echo never does is tested here: streaming or not, usage in
the stream, HTTP errors and the client's retries, bodies that are not the protocol,
broken streams, slow servers, malformed tool-call arguments, keys.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openai_fake import (
    FakeOpenAI,
    Reply,
    empty_body,
    error,
    html_page,
    text,
    tool_call,
    tool_calls,
)

from daycare_cli.run.agent import AgentRequest, AgentResult, run_agent
from daycare_cli.run.memory import read_memory
from daycare_cli.run.models import key_problem, model_checks, model_known

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
BAD_ARGS = '{"note": "x"'  # a cut-off JSON object
BAD_ERROR = "Expecting ',' delimiter: line 1 column 13 (char 12)"


@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "llm"
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return home


@pytest.fixture
def fake(llm_home: Path) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.install(llm_home)
    try:
        yield server
    finally:
        server.close()


def request(tmp_path: Path, model: str = "fake", prompt: str = "go", **kw: Any) -> AgentRequest:
    return AgentRequest(
        model_id=model,
        prompt=prompt,
        system=None,
        task_id="t",
        task_name="Task",
        trigger="manual",
        now=NOW,
        tz="UTC",
        memory_path=tmp_path / "ws" / "memory.md",
        **kw,
    )


def run(req: AgentRequest, **kw: Any) -> AgentResult:
    return asyncio.run(run_agent(req, **kw))


STREAMING = pytest.mark.parametrize("model", ["fake", "fake-nostream"])


# -- streaming ---------------------------------------------------------------------------


@STREAMING
def test_can_stream_is_honoured(tmp_path: Path, fake: FakeOpenAI, model: str) -> None:
    fake.script(tool_call("remember", {"note": "n"}), text("All good."))
    result = run(request(tmp_path, model))
    assert (result.status, result.response, result.error) == ("succeeded", "All good.", None)
    streams = [r.stream for r in fake.requests]
    assert streams == ([True, True] if model == "fake" else [False, False])
    # Usage is asked for in a stream and summed over both turns either way.
    if model == "fake":
        assert all(r.body["stream_options"] == {"include_usage": True} for r in fake.requests)
    assert (result.input_tokens, result.output_tokens) == (20, 10)


def test_usage_is_summed_over_turns(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(
        tool_call("remember", {"note": "a"}, usage=(11, 3)),
        tool_call("remember", {"note": "b"}, usage=(17, 4)),
        text("Done.", usage=(23, 5)),
    )
    result = run(request(tmp_path))
    assert (result.status, result.turns) == ("succeeded", 3)
    assert (result.input_tokens, result.output_tokens) == (51, 12)


def test_no_usage_reported_means_no_token_counts(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(text("Hi.", usage=None))
    result = run(request(tmp_path))
    assert (result.status, result.input_tokens, result.output_tokens) == ("succeeded", None, None)


def test_a_model_without_tools_gets_no_tools(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(text("Plain answer."))
    result = run(request(tmp_path, "fake-notools"))
    assert result.status == "succeeded"
    (sent,) = fake.requests
    assert "tools" not in sent.body
    assert "skip(reason)" not in sent.content("system")


def test_the_tool_turn_limit_counts_requests(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(*[tool_call("remember", {"note": f"n{i}"}) for i in range(6)])
    result = run(request(tmp_path))
    assert (result.status, result.turns, len(fake.requests)) == ("failed", 5, 5)
    assert result.error == (
        "the model was still calling tools after 5 turns; simplify the task or its prompt"
    )
    assert len(read_memory(tmp_path / "ws" / "memory.md").splitlines()) == 5


def test_skip_cancels_the_other_calls_of_its_turn(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(
        tool_calls(("remember", {"note": "no"}), ("skip", {"reason": "quiet"})), text("unused")
    )
    result = run(request(tmp_path))
    assert (result.status, result.skip_reason, len(fake.requests)) == ("skipped", "quiet", 1)
    assert fake.pending() == 1
    assert [c["status"] for c in result.tool_calls] == ["cancelled", "ok"]


# -- replies that are not an answer ------------------------------------------------------


@STREAMING
def test_an_html_page_with_200_fails_with_status_and_content_type(
    tmp_path: Path, fake: FakeOpenAI, model: str
) -> None:
    fake.script(html_page())
    result = run(request(tmp_path, model))
    assert result.status == "failed"
    expected = "text/event-stream" if model == "fake" else "application/json"
    detail = (
        f"(HTTP 200, content type text/html, where the OpenAI protocol sends {expected}; "
        "check the model's api_base)"
    )
    assert result.error is not None and result.error.endswith(detail)
    assert result.error.startswith(f"model '{model}' ")
    assert result.response == ""
    assert result.exchanges == [
        {
            "turn": 1,
            "attempt": 1,
            "status": 200,
            "content_type": "text/html",
            "duration_ms": result.exchanges[0]["duration_ms"],
        }
    ]


def test_an_empty_stream_fails_as_nothing_returned(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(empty_body())
    result = run(request(tmp_path))
    # The content type was right; there was just nothing in it.
    assert (result.status, result.error) == ("failed", "model 'fake' returned nothing")


@STREAMING
def test_whitespace_only_is_nothing(tmp_path: Path, fake: FakeOpenAI, model: str) -> None:
    fake.script(text(" \n "))
    result = run(request(tmp_path, model))
    assert (result.status, result.error) == ("failed", f"model '{model}' returned nothing")


def test_a_broken_stream_fails_the_run(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(Reply(text="one two three four five", cut_after=3))
    result = run(request(tmp_path))
    assert result.status == "failed"
    assert result.error == "model 'fake' failed: APIConnectionError: Connection error"


# -- HTTP errors and retries -------------------------------------------------------------


@STREAMING
def test_the_clients_retries_are_recorded(tmp_path: Path, fake: FakeOpenAI, model: str) -> None:
    fake.script(error(500), error(503), text("Finally."))
    events: list[tuple[str, dict[str, Any]]] = []
    result = run(request(tmp_path, model), on_event=lambda n, f: events.append((n, f)))
    assert (result.status, result.response) == ("succeeded", "Finally.")
    assert [(e["attempt"], e["status"]) for e in result.exchanges] == [(1, 500), (2, 503), (3, 200)]
    assert (result.retries, result.attempts) == (2, 3)
    assert [(n, f["attempt"], f["status"]) for n, f in events] == [
        ("model.request", 1, 500),
        ("model.request", 2, 503),
        ("model.request", 3, 200),
    ]


def test_a_persistent_500_fails_after_three_attempts(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(*[error(500, "overloaded")] * 3)
    result = run(request(tmp_path))
    assert result.status == "failed"
    assert result.error == "model 'fake' failed: InternalServerError: Error code: 500 - overloaded"
    assert (len(fake.requests), result.attempts, result.retries) == (3, 3, 2)
    assert [e["status"] for e in result.exchanges] == [500, 500, 500]


def test_retries_are_counted_per_turn(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(error(500), tool_call("remember", {"note": "n"}), error(502), text("Done."))
    result = run(request(tmp_path))
    assert result.status == "succeeded"
    assert [(e["turn"], e["attempt"], e["status"]) for e in result.exchanges] == [
        (1, 1, 500),
        (1, 2, 200),
        (2, 1, 502),
        (2, 2, 200),
    ]
    assert (result.retries, result.attempts) == (2, 2)


def test_a_slow_server_is_cut_by_cancellation_and_the_attempt_is_kept(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    fake.script(Reply(text="late", delay=30))
    events: list[tuple[str, dict[str, Any]]] = []

    async def main() -> None:
        handoff = asyncio.create_task(
            run_agent(request(tmp_path), on_event=lambda n, f: events.append((n, f)))
        )
        # Cancel (as a run timeout does) once the request is at the server, not before.
        for _ in range(1000):
            if fake.requests:
                break
            await asyncio.sleep(0.01)
        handoff.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handoff

    asyncio.run(main())
    assert len(fake.requests) == 1
    # The attempt in flight is reported on the way out, with no status.
    assert events == [
        (
            "model.request",
            {"turn": 1, "attempt": 1, "status": None, "content_type": None, "duration_ms": None},
        )
    ]


# -- malformed tool-call arguments -------------------------------------------------------


@STREAMING
def test_malformed_arguments_go_back_to_the_model_once(
    tmp_path: Path, fake: FakeOpenAI, model: str
) -> None:
    fake.script(tool_call("remember", BAD_ARGS), tool_call("remember", {"note": "ok"}), text("Ok."))
    result = run(request(tmp_path, model))
    assert (result.status, result.response, result.turns) == ("succeeded", "Ok.", 3)
    assert [(c["turn"], c["status"], c["arguments"]) for c in result.tool_calls] == [
        (1, "error", {"_raw": BAD_ARGS}),
        (2, "ok", {"note": "ok"}),
    ]
    # The second request shows the model its call and the error, answering it by id.
    second = fake.requests[1]
    (assistant,) = second.messages("assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"_raw": BAD_ARGS}
    (tool,) = second.messages("tool")
    assert tool["tool_call_id"] == "call_0"
    assert tool["content"] == (
        f"Error: the arguments of this call are not valid JSON ({BAD_ERROR}); "
        "call remember again with a JSON object as its arguments"
    )
    assert second.body["tools"] == fake.requests[0].body["tools"]
    assert second.stream == (model == "fake")
    assert read_memory(tmp_path / "ws" / "memory.md").endswith(": ok\n")


@STREAMING
def test_malformed_arguments_twice_fail_naming_the_call(
    tmp_path: Path, fake: FakeOpenAI, model: str
) -> None:
    fake.script(tool_call("remember", BAD_ARGS), tool_call("skip", '{"reason": '))
    result = run(request(tmp_path, model))
    assert result.status == "failed"
    assert result.error == (
        f"model '{model}' sent malformed tool-call arguments twice, the second time in "
        "tool call skip (call_0): Expecting value: line 1 column 12 (char 11); "
        "try a model that handles tool calls better"
    )
    assert len(fake.requests) == 2
    assert "JSONDecodeError" not in result.error


def test_a_valid_skip_beside_a_malformed_call_still_skips(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(tool_calls(("remember", BAD_ARGS), ("skip", {"reason": "nothing new"})))
    result = run(request(tmp_path))
    assert (result.status, result.skip_reason, len(fake.requests)) == (
        "skipped",
        "nothing new",
        1,
    )
    assert [(c["name"], c["status"]) for c in result.tool_calls] == [
        ("remember", "cancelled"),
        ("skip", "ok"),
    ]


def test_a_valid_call_beside_a_malformed_one_runs(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(tool_calls(("remember", {"note": "kept"}), ("remember", BAD_ARGS)), text("Ok."))
    result = run(request(tmp_path))
    assert result.status == "succeeded"
    assert [c["status"] for c in result.tool_calls] == ["ok", "error"]
    assert [m["tool_call_id"] for m in fake.requests[1].messages("tool")] == ["call_0", "call_1"]
    assert read_memory(tmp_path / "ws" / "memory.md").endswith(": kept\n")


# -- keys --------------------------------------------------------------------------------


def test_missing_key_names_the_models_own_key_and_no_env_var(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with the OpenAI key in the environment: it must not go to another server.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-real-key")
    result = run(request(tmp_path, "fake-keyed"))
    assert result.status == "failed"
    assert result.error == (
        "model 'fake-keyed' has no API key; add one with `llm keys set fake-key`"
    )
    assert fake.requests == []
    assert model_known("fake-keyed") == (False, result.error)


def test_the_stored_key_is_sent(
    tmp_path: Path, fake: FakeOpenAI, llm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-real-key")
    (llm_home / "keys.json").write_text(json.dumps({"fake-key": "sk-fake-123"}))
    fake.script(text("Authorized."))
    result = run(request(tmp_path, "fake-keyed"))
    assert (result.status, result.response) == ("succeeded", "Authorized.")
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-fake-123"


def test_a_model_without_a_key_name_sends_no_real_key(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-real-key")
    fake.script(text("Hi."))
    assert run(request(tmp_path)).status == "succeeded"
    assert "sk-openai-real-key" not in fake.requests[0].headers.get("Authorization", "")


def test_openais_own_models_keep_their_env_var_hint(llm_home: Path) -> None:
    import llm

    problem = key_problem(llm.get_async_model("gpt-4o-mini"))
    assert problem == (
        "model 'gpt-4o-mini' has no API key; add one with `llm keys set openai` "
        "or set OPENAI_API_KEY"
    )


def test_doctor_lines_for_every_model(fake: FakeOpenAI, llm_home: Path) -> None:
    checks = model_checks(
        "fake",
        [
            ("digest", "fake-notools"),
            ("monitor", "fake-keyed"),
            ("poll", "fake-keyed"),
            ("reminder", "none"),
            ("old", "no-such-model"),
            ("same", "fake"),
            ("default", None),
        ],
    )
    by_name = {c.name: (c.level, c.detail) for c in checks}
    assert list(by_name) == [
        "model",
        "model fake-keyed",
        "model fake-notools",
        "model no-such-model",
    ]
    assert by_name["model"] == (
        "ok",
        f"model 'fake' at {fake.url} is available; no key needed; tools: yes",
    )
    assert by_name["model fake-keyed"] == (
        "fail",
        f"model 'fake-keyed' at {fake.url} is available; no API key: add one with "
        "`llm keys set fake-key`; tools: yes; used by monitor, poll",
    )
    assert by_name["model fake-notools"] == (
        "ok",
        f"model 'fake-notools' at {fake.url} is available; no key needed; "
        "tools: no (skip and remember are not offered); used by digest",
    )
    level, detail = by_name["model no-such-model"]
    assert level == "fail" and detail.startswith("unknown model 'no-such-model'")
    assert detail.endswith("; used by old")
    (llm_home / "keys.json").write_text(json.dumps({"fake-key": "sk-fake-123"}))
    keyed = next(c for c in model_checks(None, [("m", "fake-keyed")]) if c.name != "model")
    assert keyed.level == "ok" and "key set (fake-key)" in keyed.detail


def test_doctor_without_models(llm_home: Path) -> None:
    checks = model_checks("none", [("reminder", None)])
    assert [(c.name, c.level) for c in checks] == [("model", "ok")]
    assert "no default model" in checks[0].detail
