"""How much the HTTP servers let one connection take (docs/operations.md, "Webhooks").

- A request's head must be complete `HEADER_TIMEOUT` after the connection opened or the
  previous response was sent: a client sending it a byte at a time (slowloris) is closed,
  and so is an idle keep-alive connection (aiohttp's keep-alive timer, which data does
  not reset, with this value).
- A webhook's body must arrive within `BODY_TIMEOUT` of its head (408), 1 MiB at most.
- The webhook port holds at most `webhook.max_connections` connections (`CappedSite`);
  one beyond is closed as soon as it is accepted, and counted (the daemon's log tallies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

MAX_BODY = 1024 * 1024
TOO_LARGE = {"error": "payload larger than 1 MiB"}
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
BACKLOG = 128
# How long a stopping server waits for handlers still running; streams end on their own
# (the event bus closes first), so this only bounds a handler that misbehaves.
SHUTDOWN_TIMEOUT = 2.0


def app_runner(app: web.Application) -> web.AppRunner:
    """The runner of one of the daemon's servers: no access log (a webhook URL carries its
    token), no signal handling of its own, idle keep-alive bounded like a request head."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=HEADER_TIMEOUT,
    )


class CappedSite(web.BaseSite):
    """A TCP site holding at most `cap` connections; one beyond is closed at once.

    aiohttp registers a connection when asyncio calls its `connection_made`, a turn of the
    loop after the protocol was made, so the ones made but not yet registered are counted
    too (`landing`): a burst of accepts cannot overshoot the cap.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        cap: int,
        on_refused: Callable[[str], None],
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self.host, self.port, self.cap = host, port, cap
        self.on_refused = on_refused
        self.landing = 0
        self.listener: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(
            self._protocol, self.host, self.port, backlog=BACKLOG, reuse_address=True
        )
        self._server = self.listener  # where aiohttp's runner looks for it

    @property
    def serving(self) -> bool:
        """Whether the site accepts connections."""
        return self.listener is not None and self.listener.is_serving()

    @property
    def bound_port(self) -> int:
        """The port taken (the one asked for, or a free one for port 0)."""
        assert self.listener is not None
        return int(self.listener.sockets[0].getsockname()[1])

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) + self.landing >= self.cap:
            self.on_refused(f"{self.cap} connections are open (webhook.max_connections)")
            return _Refused()
        self.landing += 1
        loop = asyncio.get_running_loop()
        # Two turns: asyncio schedules `connection_made` right after this returns.
        loop.call_soon(loop.call_soon, self._landed)
        return server()

    def _landed(self) -> None:
        self.landing -= 1


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


@web.middleware
async def read_body_in_time(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Read a webhook's body (up to 1 MiB) within BODY_TIMEOUT; the handler gets it cached."""
    length = request.content_length
    if request.body_exists and (length is None or length <= MAX_BODY):
        try:
            if request.content.is_eof():
                await request.read()  # it came with the head: no timer to arm
            else:
                async with asyncio.timeout(BODY_TIMEOUT):
                    await request.read()
        except TimeoutError:
            return web.json_response({"error": "request body not received in time"}, status=408)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(TOO_LARGE, status=413)
    return await handler(request)
