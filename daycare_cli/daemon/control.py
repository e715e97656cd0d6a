"""The control API on the daemon's 0600 unix socket: status, tasks, run now, reload, follow.

The CLI's side is `daycare_cli/client.py`. Like the webhook server (`server.py`), it
starts no run by itself: `run now` submits to the scheduler, and streams end when the
event bus closes, so a stopping daemon never waits on a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from daycare_cli.core.task import valid_task_id
from daycare_cli.daemon.connections import BACKLOG, MAX_BODY, app_runner
from daycare_cli.daemon.events import EventBus, Subscription
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.daemon.server import WebhookServer
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State

log = logging.getLogger("daycare.server")

TASKS_SLICE = 200  # tasks per slice of `GET /tasks`, between which the loop runs others


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
        app.router.add_post("/webhooks/forget", self.forget_tokens)
        app.router.add_get("/follow", self.follow)
        self.runner = app_runner(app)
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

    async def forget_tokens(self, request: web.Request) -> web.Response:
        """`daycare webhook rotate` revoked a token: the webhook server asks state.db anew."""
        self.webhooks.tokens.forget()
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
        # The row is final here: `run.end` is emitted once the end is committed, and a
        # stopping daemon commits its interruptions before it ends the streams.
        run = self.state.get_run(run_id)
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
