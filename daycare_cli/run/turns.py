"""One inference of a model through `llm`, and the tool calls it made as the model sent them.

A turn is drained through llm's stream events, so that when the provider's plugin
cannot parse a tool call's arguments (llm's OpenAI plugin raises `JSONDecodeError` from
inside the response) the calls are still known: their ids, names and the raw argument
text. `MalformedArguments` carries them, and `continue_after` builds the next turn
from them by hand, since a failed response cannot be replied to.

Models of plugins that only offer sync models are driven in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import llm


@dataclass(frozen=True)
class SentCall:
    """A tool call as the model sent it: the raw argument text and what parsing it gave."""

    tool_call_id: str | None
    name: str
    arguments_text: str
    arguments: dict[str, Any] | None  # None when the text is not valid JSON
    error: str | None  # the JSON error, when there is one

    @property
    def label(self) -> str:
        """`remember (call_0)`: how an error message names the call."""
        return f"{self.name or '?'} ({self.tool_call_id})" if self.tool_call_id else self.name


def sent_call(tool_call_id: str | None, name: str, text: str) -> SentCall:
    """Parse a call's argument text the way llm's plugins do (empty text is `{}`)."""
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        return SentCall(tool_call_id, name, text, None, str(exc))
    return SentCall(tool_call_id, name, text, value if isinstance(value, dict) else {}, None)


class MalformedArguments(Exception):
    """A turn ended with tool calls whose arguments are not JSON; `calls` are all of its calls."""

    def __init__(self, calls: list[SentCall], text: str) -> None:
        bad = next(c for c in calls if c.error is not None)
        super().__init__(f"tool call {bad.label}: {bad.error}")
        self.calls = calls
        self.text = text

    @property
    def malformed(self) -> list[SentCall]:
        return [c for c in self.calls if c.error is not None]


def _calls_in_json(data: Any) -> list[SentCall]:
    """Tool calls of a chat-completions body (`choices[0].message.tool_calls`), if any."""
    try:
        raw = data["choices"][0]["message"]["tool_calls"] or []
        return [
            sent_call(
                c.get("id"),
                str(c["function"].get("name") or ""),
                str(c["function"].get("arguments") or ""),
            )
            for c in raw
        ]
    except (KeyError, IndexError, TypeError, AttributeError):
        return []


def _calls_in_events(events: list[Any]) -> list[SentCall]:
    """Tool calls rebuilt from stream events, grouped the way llm groups them (part index)."""
    groups: dict[Any, dict[str, Any]] = {}
    for event in events:
        if event.type not in ("tool_call_name", "tool_call_args"):
            continue
        group = groups.setdefault(event.part_index, {"id": None, "name": "", "args": ""})
        group["id"] = group["id"] or event.tool_call_id
        group["name" if event.type == "tool_call_name" else "args"] += event.chunk or ""
    return [sent_call(g["id"], g["name"], g["args"]) for g in groups.values()]


class Turn:
    """One inference, async or (for plugins that only offer sync models) in a thread."""

    def __init__(self, response: llm.AsyncResponse | llm.Response, stream: bool) -> None:
        self.response = response
        self.stream = stream
        self.events: list[Any] = []

    async def finish(self) -> tuple[str, list[llm.ToolCall], llm.Usage]:
        """Text, tool calls and usage; MalformedArguments when a call's arguments are not JSON."""
        import llm

        r = self.response
        try:
            if isinstance(r, llm.AsyncResponse):
                async for event in r.astream_events():  # type: ignore[no-untyped-call]
                    self.events.append(event)
                return await r.text(), await r.tool_calls(), await r.usage()

            def drain() -> tuple[str, list[llm.ToolCall], llm.Usage]:
                assert isinstance(r, llm.Response)
                for event in r.stream_events():  # type: ignore[no-untyped-call]
                    self.events.append(event)
                return r.text(), r.tool_calls(), r.usage()

            return await asyncio.to_thread(drain)
        except ValueError as exc:  # json.JSONDecodeError is one
            # A non-streamed body is kept before its calls are parsed; a stream is not.
            calls = _calls_in_json(getattr(r, "response_json", None)) or _calls_in_events(
                self.events
            )
            if not any(c.error is not None for c in calls):
                raise
            text = "".join(e.chunk or "" for e in self.events if e.type == "text")
            raise MalformedArguments(calls, text) from exc

    async def reply(self, results: list[llm.ToolResult]) -> Turn:
        """The next turn: this one's messages, its tool calls' results."""
        import llm

        r = self.response
        if isinstance(r, llm.AsyncResponse):
            return Turn(await r.reply(tool_results=results, stream=self.stream), self.stream)
        return Turn(
            await asyncio.to_thread(lambda: r.reply(tool_results=results, stream=self.stream)),
            self.stream,
        )

    def continue_after(self, bad: MalformedArguments, results: list[llm.ToolResult]) -> Turn:
        """The next turn after a turn whose response failed on malformed arguments.

        The model sees its own turn again (text and every call, a malformed call's
        arguments as `{"_raw": text}`, llm's own convention) and one result per call.
        """
        import llm
        from llm.parts import TextPart, ToolCallPart

        parts: list[Any] = [TextPart(text=bad.text)] if bad.text else []
        for call in bad.calls:
            arguments = call.arguments
            if arguments is None:
                arguments = {"_raw": call.arguments_text}
            parts.append(
                ToolCallPart(name=call.name, arguments=arguments, tool_call_id=call.tool_call_id)
            )
        r = self.response
        chain = [*r.prompt.messages, llm.assistant(*parts)]
        return Turn(
            r.model.prompt(
                messages=chain,
                tool_results=results,
                tools=list(r.prompt.tools),
                stream=self.stream,
            ),
            self.stream,
        )
