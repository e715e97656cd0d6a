"""The webhook server on loopback TCP (the control API on its unix socket: `control.py`).

Neither server starts runs by itself: both submit to the scheduler, which applies the same
overlap policy and global cap as for scheduled fires. The servers take the parts they use
(scheduler, state, paths, event bus); the daemon that runs them is not their concern
(it starts, checks and restarts them: `parts.py`).

Connections are bounded (`connections.py`): a request's head must arrive within
`HEADER_TIMEOUT` (which is also how long an idle keep-alive connection stays open), a
webhook's body within `BODY_TIMEOUT`, and the webhook port holds at most
`webhook.max_connections` connections (the ones beyond are closed at once and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from daycare_cli.core.errors import UserError
from daycare_cli.core.policy import queue_full
from daycare_cli.core.task import WebhookTrigger, valid_task_id
from daycare_cli.daemon.connections import (
    MAX_BODY,
    CappedSite,
    app_runner,
    read_body_in_time,
)
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store import writes
from daycare_cli.store.database import describe
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State

log = logging.getLogger("daycare.server")

NOT_FOUND = {"error": "not found"}
TOKEN_FRESH = 1.0  # seconds a token found in state.db is trusted without asking again
TOKEN_KEEP = 1024  # tokens remembered at most (only tokens that were found)


class TokenCache:
    """Webhook tokens found lately, each with its (task, trigger).

    In a burst the same token comes thousands of times a second, and each lookup in
    state.db on the event loop's thread hands the GIL to the writer or a worker (~50–80
    µs a request under load). `daycare webhook rotate` empties the cache as soon as it
    has revoked a token (control API `POST /webhooks/forget`), so the old URL stops
    working at once; an entry is trusted for `TOKEN_FRESH` s at most, which bounds a
    rotation the daemon was not told of (it was starting meanwhile). Only tokens that
    were found are kept: unknown ones are asked of state.db each time, and a flood of
    them cannot grow the cache. (A dict lookup by token leaks nothing through timing:
    str hashes are keyed per process.)
    """

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, str] | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._found: dict[str, tuple[float, tuple[str, str]]] = {}

    def get(self, token: str) -> tuple[str, str] | None:
        """The (task, trigger_id) of an active token, or None."""
        now = self._clock()
        hit = self._found.get(token)
        if hit is not None and now - hit[0] < TOKEN_FRESH:
            return hit[1]
        found = self._lookup(token)
        if found is None:
            self._found.pop(token, None)
            return None
        if len(self._found) >= TOKEN_KEEP:
            self._found.clear()
        self._found[token] = (now, found)
        return found

    def forget(self) -> None:
        """Drop every remembered token (one was revoked)."""
        self._found.clear()


class PortInUse(UserError):
    """The webhook port is taken (by another daycare daemon, or another program)."""


def check_signature(kind: str, secret: str, body: bytes, headers: Any) -> bool:
    """Verify a webhook signature in constant time.

    `github`: `X-Hub-Signature-256: sha256=<hex>`; `hmac-sha256`: `X-Signature-256`
    (or `X-Daycare-Signature`) with the hex digest, `sha256=` prefix optional.
    """
    if kind == "github":
        given = headers.get("X-Hub-Signature-256", "")
    else:
        given = headers.get("X-Signature-256") or headers.get("X-Daycare-Signature") or ""
    given = given.strip()
    if given.startswith("sha256="):
        given = given[len("sha256=") :]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.lower().encode(), expected.encode())


class WithheldDetails(logging.Filter):
    """aiohttp's own error logs quote the request line or headers it choked on (a 9,000
    character query string logs the whole line, token included). Keep the event and
    where it happened, never the text: the exception's type and its frames only."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        what = type(exc).__name__ if exc is not None else "error"
        where = ""
        if exc is not None and not _is_http_error(exc):
            import traceback

            # A bug, not a bad request: its frames (no message, no locals) stay useful.
            frames = traceback.format_tb(exc.__traceback__)
            where = "\n" + "".join(frames).rstrip()
        record.msg = (
            "HTTP request refused or failed: %s (details withheld: they may hold a token)%s"
        )
        record.args = (what, where)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _is_http_error(exc: BaseException) -> bool:
    from aiohttp import http_exceptions

    return isinstance(exc, http_exceptions.HttpProcessingError | web.HTTPException)


def withhold_http_details() -> None:
    """Install `WithheldDetails` on aiohttp's loggers (idempotent)."""
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, WithheldDetails) for f in logger.filters):
            logger.addFilter(WithheldDetails())


class WebhookServer:
    """`POST /hooks/<token>` on 127.0.0.1:8765 (config `webhook.host`/`webhook.port`).

    Settings and secrets are read from the scheduler's config, which a reload replaces.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        state: State,
        paths: Paths,
        *,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.state = state
        self.paths = paths
        self.stopping = False
        self.runner: web.AppRunner | None = None
        self.site: CappedSite | None = None
        self.url = ""
        self.bound: tuple[str, int, int] | None = None  # the settings it listens with
        self.last_port = 0  # the port taken for `webhook.port = 0`, asked for again first
        self.on_refused = on_refused or (lambda reason: None)
        self.tokens = TokenCache(state.lookup_token)

    @property
    def listening(self) -> bool:
        """Whether the listener is up and accepting connections."""
        return self.site is not None and self.site.serving

    def wanted(self) -> tuple[str, int, int]:
        """(host, port, connection cap) as the config says now (port 0: any free port)."""
        config = self.scheduler.config
        cap = int(config.get("webhook.max_connections"))
        return config.webhook_host, config.webhook_port, cap

    async def start(self) -> None:
        """Listen on the configured address; `PortInUse` names who holds a busy port."""
        withhold_http_details()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[read_body_in_time])
        app.router.add_post("/hooks/{token}", self.handle)
        # No access log: the URL path carries the token, which must never be logged.
        self.runner = app_runner(app)
        await self.runner.setup()
        host, port, cap = wanted = self.wanted()
        # Port 0 is a valid setting (any free port): the one taken before is asked for
        # first, so a listener that stops and starts again keeps its URL when it can.
        tries = [self.last_port, 0] if port == 0 and self.last_port else [port]
        error: OSError | None = None
        for attempt in tries:
            site = CappedSite(self.runner, host, attempt, cap=cap, on_refused=self.on_refused)
            try:
                await site.start()
            except OSError as exc:
                await site.stop()
                error = exc
                continue
            self.site, error = site, None
            break
        if error is not None:
            await self.stop()
            if error.errno == errno.EADDRINUSE:
                raise await self._in_use(host, port) from None
            raise error
        assert self.site is not None
        bound_port = self.site.bound_port
        if port == 0:
            self.last_port = bound_port
        self.bound = wanted
        self.url = f"http://{host}:{bound_port}"
        self.paths.runtime_dir.mkdir(parents=True, exist_ok=True)
        (self.paths.runtime_dir / "webhook.url").write_text(self.url + "\n")

    async def _in_use(self, host: str, port: int) -> PortInUse:
        from daycare_cli.daemon.ports import port_holder

        # psutil walks /proc: off the loop.
        holder = await asyncio.to_thread(port_holder, port)
        return PortInUse(
            f"webhooks cannot listen: {host}:{port} is in use by {holder}",
            hint=f"set `webhook.port` in {self.scheduler.config.path} to a free port "
            "(0 takes any free port) and reload; the other tasks are scheduled meanwhile",
        )

    async def stop(self) -> None:
        """Stop listening and close every connection; the published URL is withdrawn."""
        self.site = None
        self.bound = None
        self.url = ""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
        # Withdrawn once the port is closed: while the file exists, the port is ours.
        with contextlib.suppress(FileNotFoundError):
            (self.paths.runtime_dir / "webhook.url").unlink()

    async def handle(self, request: web.Request) -> web.Response:
        if self.stopping:
            return web.json_response({"error": "daemon is stopping"}, status=503)
        length = request.content_length
        if length is not None and length > MAX_BODY:
            return web.json_response({"error": "payload larger than 1 MiB"}, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "payload larger than 1 MiB"}, status=413)
        state, scheduler = self.state, self.scheduler
        found = self.tokens.get(request.match_info["token"])
        if found is None or not valid_task_id(found[0]):
            return web.json_response(NOT_FOUND, status=404)
        task_id, trigger_id = found
        sched = scheduler.plan.tasks.get(task_id)
        trigger = sched.task.trigger(trigger_id) if sched else None
        if sched is None or not isinstance(trigger, WebhookTrigger) or not sched.task.enabled:
            return web.json_response(NOT_FOUND, status=404)
        if trigger.signature:
            secret = scheduler.config.secret(trigger.secret or "")
            if secret is None:
                log.warning(
                    "%s: webhook secret %r is not configured; refusing", task_id, trigger.secret
                )
                return web.json_response({"error": "signature secret not configured"}, status=403)
            if not check_signature(trigger.signature, secret, body, request.headers):
                # In the ledger before the 401 goes out (one group commit, off the loop).
                with contextlib.suppress(Exception):
                    await scheduler.writer.commit(
                        writes.add_event("webhook", "webhook.bad_signature", task=task_id)
                    )
                return web.json_response({"error": "bad signature"}, status=401)
        delivery = request.headers.get("X-GitHub-Delivery") or request.headers.get(
            "Idempotency-Key"
        )
        if delivery:
            seen = state.delivery_run(task_id, delivery)
            if seen is not None:
                return web.json_response({"run": seen, "duplicate": True}, status=202)
        return await self._queue(task_id, trigger_id, body, delivery)

    async def _queue(
        self, task_id: str, trigger_id: str, body: bytes, delivery: str | None
    ) -> web.Response:
        """Queue the run durably and answer 202 once its row is committed (docs/operations.md).

        The row (status `queued`, with the payload) is one transaction on the daemon's
        writer thread, committed together with whatever else is queued (group commit), so
        a burst costs one commit per batch, not one per request. While state.db cannot be
        written, nothing is promised: 503, and the sender tries again later.
        """
        scheduler = self.scheduler
        if not scheduler.writer.healthy:
            return web.json_response(
                {"error": "the daemon cannot record runs right now; try again later"},
                status=503,
                headers={"Retry-After": "10"},
            )
        limit = int(scheduler.config.get("webhook.queue_size"))
        if queue_full(scheduler.queue_depth(task_id), limit):
            return web.json_response({"error": "queue full, try again later"}, status=429)
        req = scheduler.enqueue(
            task_id, kind="webhook", trigger_id=trigger_id, payload=body, delivery_id=delivery
        )
        if req is None or req.row is None:
            return web.json_response(NOT_FOUND, status=404)
        try:
            # Shielded: a sender that hangs up does not undo a row on its way to disk.
            created = await asyncio.shield(req.row)
        except Exception as exc:
            log.error("%s: webhook run not recorded: %s", task_id, describe(exc))
            return web.json_response(
                {"error": "the daemon could not record the run; try again later"}, status=503
            )
        if created is None and delivery:
            # The same delivery came twice at once: the first one's run answers both.
            earlier = self.state.delivery_run(task_id, delivery)
            return web.json_response({"run": earlier, "duplicate": True}, status=202)
        return web.json_response({"run": req.run_id}, status=202)
