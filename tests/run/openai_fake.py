"""A loopback server speaking OpenAI's chat-completions protocol, scripted by the test.

This is the protocol OpenAI, Ollama, vLLM, LM Studio and most proxies speak, so a test
that goes through it exercises `llm`'s own OpenAI client (the `openai` package, its
retries, its SSE decoder) exactly as a real provider would, with no network.

    fake = FakeOpenAI()                       # aiohttp on 127.0.0.1, a random port
    fake.install(llm_user_path)               # models in extra-openai-models.yaml
    fake.script(tool_call("skip", {"reason": "quiet"}), text("unused"))
    ... run a task with `model: fake` ...
    fake.requests[0].body["messages"]         # what the model was sent

Each POST to /v1/chat/completions takes the next scripted reply (of the queue whose
`when` text occurs in the request, else the default queue) and answers it streamed (SSE)
or not, as the request asks. With nothing scripted it answers 500, so a test that sends
more requests than it expected fails loudly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

MODEL_NAME = "fake-model"

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head>\r\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>"
    b"</html>\r\n"
)


@dataclass
class Reply:
    """One scripted answer.

    `text` and `tool_calls` ((name, raw JSON arguments) pairs) make a protocol reply with
    `usage` (prompt, completion tokens; None: no usage at all). `status` other than 200
    answers an OpenAI-style error body. `raw` replaces the whole body (sent with
    `content_type`), for replies that are not the protocol at all. `delay` waits before
    the headers; `cut_after` ends a stream after that many events without `[DONE]` and
    closes the connection. An error carries `Retry-After-Ms` (`retry_after_ms`), which
    the openai client obeys, so that its retries take milliseconds in tests.
    """

    text: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    usage: tuple[int, int] | None = (10, 5)
    status: int = 200
    raw: bytes | None = None
    content_type: str = "text/html; charset=utf-8"
    delay: float = 0.0
    cut_after: int | None = None
    retry_after_ms: int = 20


def text(content: str, usage: tuple[int, int] | None = (10, 5)) -> Reply:
    """A plain answer."""
    return Reply(text=content, usage=usage)


def tool_call(name: str, arguments: dict[str, Any] | str, **kw: Any) -> Reply:
    """One tool call; `arguments` as a dict (sent as JSON) or a raw, possibly broken, string."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Reply(tool_calls=[(name, raw)], **kw)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], **kw: Any) -> Reply:
    """Several tool calls in one turn."""
    return Reply(
        tool_calls=[(n, a if isinstance(a, str) else json.dumps(a)) for n, a in calls], **kw
    )


def error(status: int, message: str = "the server had an error") -> Reply:
    """An HTTP error with OpenAI's error body."""
    return Reply(status=status, text=message)


def html_page(status: int = 200) -> Reply:
    """A proxy's HTML error page, sent with 200 by a misconfigured gateway."""
    return Reply(status=status, raw=HTML_502, content_type="text/html")


def empty_body(content_type: str = "text/event-stream") -> Reply:
    """A 200 with nothing in it."""
    return Reply(raw=b"", content_type=content_type)


@dataclass
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def messages(self, role: str) -> list[dict[str, Any]]:
        return [m for m in self.body.get("messages", []) if m.get("role") == role]

    def content(self, role: str) -> str:
        """The text of all messages of a role, joined (content may be a list of parts)."""
        out: list[str] = []
        for m in self.messages(role):
            content = m.get("content")
            if isinstance(content, list):
                out.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
            elif content:
                out.append(str(content))
        return "\n".join(out)


class FakeOpenAI:
    """The server, running its own event loop in a thread so tests and subprocesses can call it."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._queues: dict[str | None, deque[Reply]] = {None: deque()}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake OpenAI server did not start")

    @property
    def url(self) -> str:
        """The api_base: http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting ------------------------------------------------------------------------

    def script(self, *replies: Reply, when: str | None = None) -> None:
        """Queue replies; with `when`, only for requests whose body contains that text."""
        with self._lock:
            self._queues.setdefault(when, deque()).extend(replies)

    def pending(self) -> int:
        """Replies scripted but not yet taken."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def _take(self, raw: str) -> Reply | None:
        with self._lock:
            for when, queue in self._queues.items():
                if when is not None and when in raw and queue:
                    return queue.popleft()
            default = self._queues[None]
            return default.popleft() if default else None

    # -- llm wiring -----------------------------------------------------------------------

    def models_yaml(self) -> str:
        """extra-openai-models.yaml entries pointing at this server.

        `fake` streams and calls tools; `fake-nostream` has `can_stream: false`;
        `fake-notools` cannot call tools; `fake-keyed` needs the key `fake-key`.
        """
        entries = [
            {"model_id": "fake", "supports_tools": True},
            {"model_id": "fake-nostream", "supports_tools": True, "can_stream": False},
            {"model_id": "fake-notools"},
            {"model_id": "fake-keyed", "supports_tools": True, "api_key_name": "fake-key"},
        ]
        lines: list[str] = []
        for entry in entries:
            lines.append(f"- model_id: {entry.pop('model_id')}")
            lines.append(f"  model_name: {MODEL_NAME}")
            lines.append(f"  api_base: {self.url}")
            for key, value in entry.items():
                lines.append(f"  {key}: {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    def install(self, llm_user_path: Path) -> Path:
        """Write the models into `llm_user_path` (the directory LLM_USER_PATH names)."""
        llm_user_path.mkdir(parents=True, exist_ok=True)
        path = llm_user_path / "extra-openai-models.yaml"
        path.write_text(self.models_yaml(), "utf-8")
        return path

    # -- the server -----------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = int(self._runner.addresses[0][1])
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        """Stop the server and its thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(self._runner), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @staticmethod
    async def _shutdown(runner: web.AppRunner) -> None:
        await runner.cleanup()
        # Handlers still waiting out a slow reply end here, not with the loop.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        body = json.loads(raw)
        self.requests.append(Request(request.path, dict(request.headers), body))
        reply = self._take(raw)
        if reply is None:
            reply = error(500, "the fake server has no reply scripted for this request")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.raw is not None:
            return web.Response(
                status=reply.status, body=reply.raw, headers={"Content-Type": reply.content_type}
            )
        if reply.status != 200:
            return web.json_response(
                {"error": {"message": reply.text, "type": "server_error", "code": None}},
                status=reply.status,
                headers={"Retry-After-Ms": str(reply.retry_after_ms)},
            )
        if body.get("stream"):
            return await self._stream(request, body, reply)
        return web.json_response(_completion(reply))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for n, event in enumerate(_chunks(reply, include_usage)):
            if reply.cut_after is not None and n >= reply.cut_after:
                # A dropped connection mid-stream: no [DONE], no clean chunked ending.
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _usage(reply: Reply) -> dict[str, int] | None:
    if reply.usage is None:
        return None
    prompt, completion = reply.usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(reply.tool_calls)
        ]
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL_NAME,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
    }
    usage = _usage(reply)
    if usage is not None:
        data["usage"] = usage
    return data


def _chunks(reply: Reply, include_usage: bool) -> list[dict[str, Any]]:
    """The SSE events of a streamed reply, split the way real servers split them."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL_NAME,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [chunk({"role": "assistant", "content": ""})]
    words = reply.text.split(" ")
    for i, word in enumerate(words if reply.text else []):
        events.append(chunk({"content": word if i == 0 else " " + word}))
    for i, (name, arguments) in enumerate(reply.tool_calls):
        head = {"index": i, "id": f"call_{i}", "type": "function"}
        opening = {**head, "function": {"name": name, "arguments": ""}}
        events.append(chunk({"tool_calls": [opening]}))
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            if part:
                piece = {"index": i, "function": {"arguments": part}}
                events.append(chunk({"tool_calls": [piece]}))
    events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    usage = _usage(reply)
    if include_usage and usage is not None:
        events.append(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL_NAME,
                "choices": [],
                "usage": usage,
            }
        )
    return events
