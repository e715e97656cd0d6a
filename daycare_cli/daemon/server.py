"""aiohttp servers: webhooks on loopback TCP and the control API on a 0600 unix socket.

Neither starts runs by itself: both submit to the scheduler, which applies the same
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
import heapq
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from daycare_cli.core.errors import UserError
from daycare_cli.core.policy import queue_full
from daycare_cli.core.task import WebhookTrigger, valid_task_id
from daycare_cli.daemon.connections import (
    BACKLOG,
    HEADER_TIMEOUT,
    MAX_BODY,
    CappedSite,
    read_body_in_time,
)
from daycare_cli.daemon.events import EventBus, Subscription
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store import runs, writes
from daycare_cli.store.database import describe
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State

log = logging.getLogger("daycare.server")

# How long a stopping server waits for handlers still running; streams end on their own
# (the event bus closes first), so this only bounds a handler that misbehaves.
SHUTDOWN_TIMEOUT = 2.0
NOT_FOUND = {"error": "not found"}
TASKS_SLICE = 200  # tasks per slice of `GET /tasks`, between which the loop runs others


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
        self.runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            keepalive_timeout=HEADER_TIMEOUT,
        )
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
        with contextlib.suppress(FileNotFoundError):
            (self.paths.runtime_dir / "webhook.url").unlink()
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

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
        found = state.lookup_token(request.match_info["token"])
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
        """Queue the run durably and answer 202 once its row is committed (DESIGN.md §6).

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


class ControlServer:
    """The control API on the unix socket: status, tasks, run now, reload, follow.

    `reload` re-reads config and task files; `started_at`, the webhook server's URL and
    what `health()` returns (the parts' health, the loop's lag) are shown by `/status`.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        state: State,
        paths: Paths,
        events: EventBus,
        *,
        reload: Callable[[], Awaitable[None]],
        started_at: datetime,
        webhooks: WebhookServer,
        sandbox: dict[str, Any],
        health: Callable[[float | None], dict[str, Any]] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.state = state
        self.paths = paths
        self.events = events
        self.reload_all = reload
        self.started_at = started_at
        self.webhooks = webhooks
        self.sandbox = sandbox  # run/blocks.describe_sandbox, filled in at start
        self.health = health or (lambda _window: {})
        self.runner: web.AppRunner | None = None
        self.site: web.UnixSite | None = None
        self.inode: int | None = None

    @property
    def listening(self) -> bool:
        """Whether the control socket is up and accepting connections."""
        return self.runner is not None and bool(self.runner.addresses)

    def problem(self) -> str | None:
        """Why the control API is unreachable although it runs (its socket file is gone)."""
        if not self.listening:
            return "the control socket stopped listening"
        try:
            inode = self.paths.socket.stat().st_ino
        except OSError:
            inode = None
        if inode != self.inode:
            return f"the control socket {self.paths.socket} was removed or replaced"
        return None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/status", self.status)
        app.router.add_get("/tasks", self.tasks)
        app.router.add_post("/tasks/{id}/run", self.run_now)
        app.router.add_post("/reload", self.reload)
        app.router.add_get("/follow", self.follow)
        self.runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            keepalive_timeout=HEADER_TIMEOUT,
        )
        await self.runner.setup()
        path = self.paths.socket
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of a dead daemon (we hold the daemon lock)
        old = os.umask(0o177)
        try:
            self.site = web.UnixSite(self.runner, str(path), backlog=BACKLOG)
            await self.site.start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.inode = path.stat().st_ino

    async def stop(self) -> None:
        self.site = None
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
        with contextlib.suppress(OSError):
            if self.inode is not None and self.paths.socket.stat().st_ino == self.inode:
                self.paths.socket.unlink()  # ours, not a socket another daemon made since
        self.inode = None

    async def status(self, request: web.Request) -> web.Response:
        """`daemon status`; `?lag_window=S`: the loop's lag over the last S seconds only."""
        s, plan = self.scheduler, self.scheduler.plan
        try:
            lag_window: float | None = float(request.query["lag_window"])
        except (KeyError, ValueError):
            lag_window = None
        running = [r.to_json() for r in self.state.running_runs()]
        stale = sorted((tid, sch) for tid, sch in plan.tasks.items() if sch.error is not None)
        errors = [{"task": tid, "error": str(err)} for tid, err in sorted(plan.broken.items())] + [
            {"task": tid, "error": str(sch.error), "stale": True} for tid, sch in stale
        ]
        return web.json_response(
            {
                "pid": os.getpid(),
                "started_at": self.started_at.isoformat(timespec="seconds"),
                "uptime_s": int((datetime.now(UTC) - self.started_at).total_seconds()),
                "tasks": len(plan.tasks),
                "enabled": sum(1 for x in plan.tasks.values() if x.task.enabled),
                "fires": s.fires,
                "active_runs": running,
                "pending": len(s.pending),
                "errors": errors,
                "flagged": self.state.flagged_tasks(),
                "webhook_url": self.webhooks.url or None,
                "home": str(self.paths.home),
                "tasks_dir": str(self.paths.tasks_dir),
                "sandbox": self.sandbox,
                "next": self._next(limit=10),
                **self.health(lag_window),
            }
        )

    def _next(self, limit: int) -> list[dict[str, Any]]:
        plan = self.scheduler.plan
        now = plan.clock.now()
        soonest = heapq.nsmallest(
            limit,
            (
                (when.timestamp(), tid, trig, when)
                for tid, sch in plan.tasks.items()
                for trig, when in plan.next_slots(sch, now).items()
            ),
        )
        return [
            {"task": tid, "trigger": trig, "at": when.isoformat()} for _, tid, trig, when in soonest
        ]

    async def tasks(self, request: web.Request) -> web.Response:
        """Every task's next fires, runs and error, as one JSON object.

        With 10,000 tasks the whole takes some 100 ms to build and encode, so it is built
        in slices of TASKS_SLICE tasks, each encoded on its own, and the loop runs whatever
        else is due between two slices (a fire, a webhook): no slice blocks it for more
        than a few milliseconds. Tasks that change meanwhile show the state of their slice.
        """
        plan = self.scheduler.plan
        now = plan.clock.now()
        scheduled = list(plan.tasks.items())
        broken = list(plan.broken.items())
        parts: list[bytes] = []
        for start in range(0, len(scheduled), TASKS_SLICE):
            chunk = {
                tid: {
                    "next_fire": {k: v.isoformat() for k, v in plan.next_slots(sch, now).items()},
                    "digest": sch.digest,  # which version of the file it runs
                    "active": list(sch.active),
                    "queued": len(sch.queued),
                    "error": str(sch.error) if sch.error else None,
                    "scheduled": True,
                }
                for tid, sch in scheduled[start : start + TASKS_SLICE]
            }
            parts.append(json.dumps(chunk).encode()[1:-1])
            await asyncio.sleep(0)
        chunk = {
            tid: {"next_fire": {}, "active": [], "queued": 0, "error": str(err), "scheduled": False}
            for tid, err in broken
        }
        parts.append(json.dumps(chunk).encode()[1:-1])
        body = b"{" + b", ".join(p for p in parts if p) + b"}"
        return web.Response(body=body, content_type="application/json")

    async def reload(self, request: web.Request) -> web.Response:
        await self.reload_all()
        return web.json_response({"ok": True})

    async def run_now(self, request: web.Request) -> web.StreamResponse:
        scheduler, plan = self.scheduler, self.scheduler.plan
        task_id = request.match_info["id"]
        if not valid_task_id(task_id):
            # The id rule before any path is built (`..%2F..%2Fevil` arrives decoded).
            return web.json_response({"error": f"no task {task_id!r}", "code": 3}, status=404)
        body = await request.read()
        payload = body if request.query.get("payload") == "1" else None
        path = self.paths.task_file(task_id)
        if task_id not in plan.tasks and path.exists():
            # Created a moment ago and not yet seen by the watcher: read it now.
            from daycare_cli.store.tasks import read_entry

            entry = await asyncio.to_thread(read_entry, path)  # parsing stays off the loop
            plan.apply_entry(entry, actor="cli")
        if task_id not in plan.tasks:
            err = plan.broken.get(task_id)
            if err is not None:
                return web.json_response({"error": str(err), "code": 4}, status=422)
            return web.json_response({"error": f"no task {task_id!r}", "code": 3}, status=404)
        req = scheduler.enqueue(task_id, kind="manual", payload=payload)
        if req is None or req.run_id is None:
            return web.json_response({"error": "could not start the run", "code": 1}, status=409)
        run_id = req.run_id
        if request.query.get("stream") != "1":
            if req.row is not None:
                await asyncio.shield(req.row)  # the row is committed before its id is given
            return web.json_response({"run": run_id}, status=202)
        # Subscribe before yielding to the loop, so no event of the run is missed.
        sub = self.events.subscribe(run_id)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            if req.row is not None:
                await asyncio.shield(req.row)
            await resp.prepare(request)
            await resp.write(json.dumps({"event": "run.queued", "run": run_id}).encode() + b"\n")
            await self._pump(request, sub, resp, run_id)
        finally:
            sub.close()
        run = self.state.get_run(run_id)
        if run is not None and run.status in ("queued", "running"):
            # A cancelled run's status is posted to the writer as the run ends: read it
            # after the writes queued before this point (the writer keeps their order).
            with contextlib.suppress(Exception):
                run = await asyncio.wait_for(
                    scheduler.writer.commit(lambda db: runs.get_run(db, run_id)), 2
                )
        final = {"event": "run.result", "run": run_id, "result": run.to_json() if run else None}
        await resp.write(json.dumps(final, default=str).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def _pump(
        self,
        request: web.Request,
        sub: Subscription,
        resp: web.StreamResponse,
        run_id: str | None,
        task: str | None = None,
    ) -> None:
        """Forward events until the run ends, the client leaves or the daemon stops."""
        while True:
            try:
                record = await sub.get(timeout=1.0)
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return  # the client went away
                if run_id is not None:
                    run = self.state.get_run(run_id)
                    # Ended without events (skipped by overlap, or finished elsewhere).
                    if run is not None and run.finished_at:
                        return
                continue
            if record is None:
                return  # the daemon is stopping: end of stream
            if task is not None and self._run_task(record) != task:
                continue
            await resp.write(json.dumps(record, default=str).encode() + b"\n")
            if run_id is not None and record.get("event") == "run.end":
                return

    async def follow(self, request: web.Request) -> web.StreamResponse:
        """Stream the events of one run (`?run=ID`), one task's runs or every run, as NDJSON."""
        run_id = request.query.get("run") or None
        task = request.query.get("task") or None
        sub = self.events.subscribe(run_id)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await resp.prepare(request)
            await self._pump(request, sub, resp, run_id, task)
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nothing to tell it
        finally:
            sub.close()
        return resp

    def _run_task(self, record: dict[str, Any]) -> str | None:
        run = self.state.get_run(str(record.get("run")))
        return run.task if run else None
