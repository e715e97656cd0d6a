"""The HTTP exchanges behind a model's answer: attempts, statuses, content types.

Provider clients retry on their own (the openai client sends a request up to three
times on a 500 or a timeout), and a proxy may answer 200 with an HTML error page that
the SSE decoder reads as an empty stream. Neither shows in what `llm` returns, so a run
watches the HTTP client of models of llm's OpenAI family (OpenAI and every
OpenAI-compatible server: Ollama, vLLM, LM Studio, proxies): each request is an
attempt, each response has a status and a content type. Models of other plugins are
not watched; their runs record no exchanges.

This leans on two details: the model's `get_client(key, async_=...)` method (llm's
OpenAI plugin) and the openai client's `_client`, its httpx client, whose `event_hooks`
are public. When either is missing nothing is watched and the run goes on as before.
The clients a run creates are closed when its hand-off ends, on its own event loop.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("daycare.agent")

SSE = "text/event-stream"
JSON = "application/json"


@dataclass
class Exchange:
    """One HTTP request of a turn; `status` stays None when no response came (a timeout)."""

    turn: int
    attempt: int
    status: int | None = None
    content_type: str | None = None
    duration_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def media_type(content_type: str | None) -> str:
    """`text/html; charset=utf-8` -> `text/html`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class ExchangeLog:
    """Records the exchanges of one hand-off; `turn` is set by the caller before each turn."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.turn = 0
        self._started: dict[int, tuple[Any, Exchange, float]] = {}
        self._clients: list[Any] = []

    # -- watching ---------------------------------------------------------------------

    def watch(self, model: Any) -> bool:
        """Hook into the clients the model creates; False when the model has no such seam."""
        original = getattr(model, "get_client", None)
        if not callable(original):
            return False

        def get_client(*args: Any, **kwargs: Any) -> Any:
            client = original(*args, **kwargs)
            self._attach(client)
            return client

        try:
            model.get_client = get_client  # an attribute of this model object only
        except (AttributeError, TypeError):
            return False
        return True

    def _attach(self, client: Any) -> None:
        self._clients.append(client)
        http: Any = getattr(client, "_client", None)
        hooks = getattr(http, "event_hooks", None)
        if not isinstance(hooks, dict):
            return
        # An async client awaits its hooks, a sync one calls them.
        if inspect.iscoroutinefunction(getattr(http, "send", None)):

            async def on_request_async(request: Any) -> None:
                self._request(request)

            async def on_response_async(response: Any) -> None:
                self._response(response)

            request_hook: Any = on_request_async
            response_hook: Any = on_response_async
        else:
            request_hook, response_hook = self._request, self._response
        http.event_hooks = {
            "request": [*hooks.get("request", []), request_hook],
            "response": [*hooks.get("response", []), response_hook],
        }

    def _request(self, request: Any) -> None:
        attempt = 1 + sum(1 for e in self.exchanges if e.turn == self.turn)
        exchange = Exchange(turn=self.turn, attempt=attempt)
        self.exchanges.append(exchange)
        # The request is kept with its record so that its id cannot be reused meanwhile.
        self._started[id(request)] = (request, exchange, time.monotonic())

    def _response(self, response: Any) -> None:
        started = self._started.pop(id(getattr(response, "request", None)), None)
        if started is None:
            return
        _, exchange, at = started
        exchange.status = int(response.status_code)
        exchange.content_type = response.headers.get("content-type")
        exchange.duration_ms = int((time.monotonic() - at) * 1000)

    # -- reading ----------------------------------------------------------------------

    def of_turn(self, turn: int) -> list[Exchange]:
        return [e for e in self.exchanges if e.turn == turn]

    @property
    def retries(self) -> int:
        """Requests that repeated an earlier one of the same turn (the client's retries)."""
        return sum(1 for e in self.exchanges if e.attempt > 1)

    def unexpected(self, turn: int, stream: bool) -> str | None:
        """What was wrong with the turn's last response, when its body was not the protocol's.

        `(HTTP 200, content type text/html, where the OpenAI protocol sends
        text/event-stream; check the model's api_base)`, or None when the content type
        was the expected one or nothing was watched.
        """
        answered = [e for e in self.of_turn(turn) if e.status is not None]
        if not answered:
            return None
        last = answered[-1]
        if not 200 <= (last.status or 0) < 300:
            return None  # an error status speaks for itself (the client raises with it)
        expected = SSE if stream else JSON
        got = media_type(last.content_type)
        if got == expected:
            return None
        shown = f"content type {got}" if got else "no content type"
        return (
            f"HTTP {last.status}, {shown}, where the OpenAI protocol sends {expected}; "
            "check the model's api_base"
        )

    async def close(self) -> None:
        """Close every client the model created (their connections belong to this loop)."""
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                closing = client.close()
                if inspect.isawaitable(closing):
                    await closing
            except Exception:  # closing is best effort; the run's outcome is already known
                log.debug("closing a model client failed", exc_info=True)
