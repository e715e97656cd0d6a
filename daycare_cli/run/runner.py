"""One run end to end: row -> lock -> expand -> agent -> record -> notify -> prune
(docs/architecture.md, "The life of a run").

The CLI (`daycare task run`) and the daemon both call `Runner.run`; progress is reported
as event dicts through `on_event` (the same dicts go to the run's `log.jsonl`), so the CLI
spinner and the daemon's streaming control API show the same thing.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daycare_cli.config import Config
from daycare_cli.core.streak import StreakChange
from daycare_cli.core.task import Task, effective_zone

if TYPE_CHECKING:
    from daycare_cli.run.envs import Env
from daycare_cli.run.machinery import ensure_block_machinery
from daycare_cli.run.notify import (
    Notification,
    notify_events,
    resolve_targets,
    send,
    should_notify,
)
from daycare_cli.run.recorder import EventSink, Recorder
from daycare_cli.run.rundir import (
    RunContext,
    acquire_lock,
    remove_dirs,
    try_lock,
    undo_set_up,
    write_file,
)
from daycare_cli.store import writes
from daycare_cli.store.paths import LockBusy, Paths, TaskLock
from daycare_cli.store.rows import Run
from daycare_cli.store.state import State
from daycare_cli.store.writer import WriterClosed
from daycare_cli.store.writing import InlineWriter, StateWriter

# What an outcome of `_execute` may hold, recorded in the run's row.
RECORDED: tuple[str, ...] = ("error", "skip_reason", "output", "response", "model")
RECORDED += ("input_tokens", "output_tokens", "isolation", "block_started_at")


def _close_and_remove(ctx: RunContext, doomed: list[str]) -> None:
    """Write out the run's log, then delete the directories retention removed."""
    ctx.close()
    if doomed:
        remove_dirs(doomed)


def set_up(
    ctx: RunContext, paths: Paths, lock: TaskLock | None, payload: bytes | None, *, execute: bool
) -> LockBusy | None:
    """A run's whole set-up, for one worker thread (each hand-off to a thread and back
    costs the run a millisecond or more when the machine is busy): the lock (when given),
    the workspace, and for a run with blocks the disk they start from and daycare's own
    places, which the blocks' view masks. LockBusy, with nothing made, when it is held."""
    busy = ctx.lock_and_prepare(lock, payload, execute)
    if busy is None and execute:
        from daycare_cli.run.blocks import daycare_places

        ctx.places = daycare_places(paths)
    return busy


@dataclass
class RunRequest:
    """What to run: a task, why (trigger kind and id), which slot, and an optional payload."""

    task: Task
    trigger: str = "manual"  # schedule | webhook | manual | catch-up | retry
    trigger_id: str | None = None
    slot: datetime | None = None
    attempt: int = 1
    payload: bytes | None = None
    run_id: str | None = None  # set when the row already exists (daemon, webhook)
    wait_for_lock: float | None = None  # None: per the task's overlap policy
    # The pending commit of the row the daemon wrote for this run: the row, or None when
    # its slot (or webhook delivery) had one already. None: the row is committed.
    row: asyncio.Future[Run | None] | None = None
    # Made ready before its slot under `run_id` (daemon/ahead.py): its directory (its
    # set-up under way or done, `ctx.ready`) and its first block's sandbox (`ctx.ahead`).
    ctx: RunContext | None = None


class Runner:
    """Runs tasks against one home: its paths, config and state database.

    Writes go through `writer`: the daemon's writer thread, or (by default) a commit at
    once through `state`, as the CLI does. Events and the ends of cancelled or crashed
    runs are recorded through its `recorder` (recorder.py).
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        state: State,
        *,
        actor: str = "cli",
        on_event: EventSink | None = None,
        writer: StateWriter | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.state = state
        self.actor = actor
        self.writer: StateWriter = writer or InlineWriter(state)
        self.recorder = Recorder(self.writer, config, actor=actor, on_event=on_event)

    @property
    def on_event(self) -> EventSink | None:
        """Called with each event a run records (its recorder's listener)."""
        return self.recorder.on_event

    @on_event.setter
    def on_event(self, listener: EventSink | None) -> None:
        self.recorder.on_event = listener

    # -- public -----------------------------------------------------------------------

    async def run(self, req: RunRequest) -> Run | None:
        """Run a task once; returns the finished run row, or None for a slot already taken.

        Once its row exists, a run always ends with a status: whatever fails in daycare
        itself (a full disk, no file descriptors left, a bug) ends it `failed` with the
        error, and only a cancellation goes on to the caller (recorded `cancelled`).
        """
        task = req.task
        row = req.row
        if req.run_id is None:
            created = await self.writer.commit(
                writes.create_run(
                    task.id,
                    req.trigger,
                    req.trigger_id,
                    req.slot,
                    status="queued",
                    attempt=req.attempt,
                    now=datetime.now(UTC),
                )
            )
            if created is None:
                return None
            run_id, row = created.id, None
        else:
            run_id = req.run_id
        ctx = req.ctx or RunContext.of(self.paths.workspace(task.id), run_id)
        lock = TaskLock(self.paths.workspace(task.id) / ".lock")
        try:
            # The lock and the workspace are made ready while the row is being committed
            # (they run nothing); nothing runs before both and the commit are done.
            ready = await self._get_ready(req, ctx, lock, row)
            if ready is None:
                # Its slot or delivery had a row already: the set-up is undone (the run's
                # directory removed, also what was started ahead in it; below).
                return None
            if isinstance(ready, Run):
                return ready  # skipped (another run holds the lock), or its set-up failed
            try:
                return await self._run_started(req, ctx)
            except (asyncio.CancelledError, WriterClosed):
                raise
            except Exception as exc:
                return await self.recorder.settle_crash(task, run_id, exc)
        finally:
            try:
                if ctx.ahead is not None:  # no block took it: the run ended before its blocks
                    from daycare_cli.run.blocks import end_started

                    await end_started(ctx.ahead)
            finally:
                ctx.close()
                lock.release()

    async def _get_ready(
        self,
        req: RunRequest,
        ctx: RunContext,
        lock: TaskLock,
        row: asyncio.Future[Run | None] | None,
    ) -> Run | bool | None:
        """Take the task's lock (per its overlap policy) and prepare the workspace, in one
        worker thread while the row's commit is under way; then await the commit.

        A run made ready ahead (`ctx.ready`) has its workspace: only the lock is left,
        taken here (an flock that never waits): no hand-off to a thread at its slot.

        True when the run may start; None when its row was not written (its slot or
        delivery had one); the finished row when it ended here (skipped for a busy
        lock, or failed to set up).
        """
        task, run_id = req.task, ctx.run_id
        locking = task.overlap != "allow"
        made_ahead = ctx.ready is not None
        prepared = ctx.ready
        if prepared is None:
            taken = lock if locking else None
            prepared = asyncio.ensure_future(
                asyncio.to_thread(set_up, ctx, self.paths, taken, req.payload, execute=task.execute)
            )
        try:
            created = True if row is None else await row
        except BaseException:
            undo_set_up(prepared, ctx, lock)
            raise
        if created is None:
            undo_set_up(prepared, ctx, lock)
            return None
        try:
            busy = await asyncio.shield(prepared)
            if made_ahead and locking:
                busy = try_lock(lock)
        except asyncio.CancelledError:
            undo_set_up(prepared, ctx, lock)
            self.recorder.record_cancelled(run_id, "run cancelled")
            raise
        except Exception as exc:  # no descriptor for the lock, a full disk: the run ends
            return await self.recorder.settle_crash(task, run_id, exc)
        if busy is None:
            return True
        wait = req.wait_for_lock
        if wait is None:
            wait = task.run_timeout if task.overlap in ("queue", "replace") else 0.0
        try:
            if wait <= 0:
                raise busy
            await acquire_lock(lock, wait)
        except asyncio.CancelledError:
            self.recorder.record_cancelled(run_id, "cancelled while waiting for the previous run")
            raise
        except LockBusy as held:
            if made_ahead:  # a skipped run keeps no directory
                asyncio.get_running_loop().run_in_executor(None, ctx.discard)
            reason = (
                f"another run of this task is active (pid {held.holder_pid}); "
                f"overlap: {task.overlap}"
            )
            return await self.writer.commit(
                writes.finish_run(
                    run_id,
                    status="skipped",
                    skip_reason=reason,
                    event=(self.actor, "run.skipped", {"reason": reason}),
                )
            )
        except Exception as exc:
            return await self.recorder.settle_crash(task, run_id, exc)
        if not made_ahead:
            try:
                await asyncio.to_thread(
                    set_up, ctx, self.paths, None, req.payload, execute=task.execute
                )
            except Exception as exc:
                return await self.recorder.settle_crash(task, run_id, exc)
        return True

    async def _run_started(self, req: RunRequest, ctx: RunContext) -> Run | None:
        task, run_id = req.task, ctx.run_id
        started = time.monotonic()
        # Lock taken, workspace ready, row committed: the run starts now. Recorded without
        # waiting (the writer commits it before the run's end, in order); its thread is
        # woken once the run first waits, not to take the GIL from the run's first steps
        # (the first block's code to its sandbox).
        self.writer.post(
            writes.start_run(
                run_id,
                pid=os.getpid(),
                now=datetime.now(UTC),
                task=task.id,
                run_dir=ctx.run_dir,
                event=(
                    self.actor,
                    "run.started",
                    {"trigger": req.trigger, "trigger_id": req.trigger_id, "attempt": req.attempt},
                ),
            ),
            f"the start of run {run_id}",
            wake_later=True,
        )
        return await self._run_steps(req, ctx, started)

    async def _run_steps(self, req: RunRequest, ctx: RunContext, started: float) -> Run | None:
        task, run_id = req.task, ctx.run_id
        outcome: dict[str, Any] = {}
        try:
            self.recorder.emit(
                ctx, "run.start", task=task.id, trigger=req.trigger, attempt=req.attempt
            )
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the run ends, and whoever cancelled would never learn it.
            async with asyncio.timeout(max(task.run_timeout, 1.0)):
                outcome = await self._execute(req, ctx)
        except TimeoutError:
            outcome = {
                "status": "timed_out",
                "error": f"run exceeded its run_timeout of {task.run_timeout:g}s",
            }
        except asyncio.CancelledError as exc:
            self.recorder.record_cancelled(run_id, "run cancelled", ctx, exc)
            raise
        except Exception as exc:  # a bug in a step, a full disk: the row still ends
            outcome = {"status": "failed", "error": self.recorder.crashed(task, run_id, exc)}

        outcome["block_started_at"] = ctx.block_started_at
        for key in ("skip_reason", "error", "output", "response"):
            if outcome.get(key):
                outcome[key] = self.recorder.redact(str(outcome[key]), ctx)
        status = outcome.get("status", "failed")
        duration_ms = int((time.monotonic() - started) * 1000)
        # The row, the failure streak and retention in one commit.
        ended = await self.writer.commit(
            writes.end_run(
                run_id,
                status=status,
                actor=self.actor,
                threshold=self.config.failure_streak,
                keep=self.config.keep_runs,
                max_age_days=int(self.config.max_age_days),  # retention counts whole days
                now=datetime.now(UTC),
                event=(self.actor, "run.finished", {"status": status, "duration_ms": duration_ms}),
                **{key: outcome.get(key) for key in RECORDED},
            )
        )
        self.recorder.emit(
            ctx,
            "run.end",
            status=status,
            duration_ms=duration_ms,
            error=outcome.get("error"),
            skip_reason=outcome.get("skip_reason"),
        )
        # Off the loop, in one worker thread: on a busy disk, writing out the log or
        # removing a directory tree takes milliseconds.
        await asyncio.to_thread(_close_and_remove, ctx, ended.doomed)
        await self._deliver(task, ended.run, ended.change, ctx)
        return ended.run

    async def _execute(self, req: RunRequest, ctx: RunContext) -> dict[str, Any]:
        task = req.task
        outcome: dict[str, Any] = {}
        payload_file = ctx.run_dir / "payload.json" if req.payload is not None else None
        block_errors: list[str] = []

        if task.execute:
            await ensure_block_machinery(self.config)
            from daycare_cli.run.blocks import RunBlocks, RunRefused, resolve_env

            try:
                env, used = resolve_env(task, self.config)
            except LookupError as exc:
                return {"status": "failed", "error": str(exc)}
            ctx.secrets.extend(used)
            envs = await self._prepare_envs(task, ctx)
            if isinstance(envs, str):
                return {"status": "failed", "error": envs}
            blocks = RunBlocks(
                paths=self.paths,
                config=self.config,
                task=task,
                run={
                    "id": ctx.run_id,
                    "trigger": req.trigger,
                    "slot": req.slot.isoformat() if req.slot else None,
                },
                files_dir=ctx.files_dir,
                artifacts_dir=ctx.artifacts_dir,
                payload_file=payload_file,
                env=env,
                emit=lambda event, **fields: self.recorder.emit(ctx, event, **fields),
                redact=lambda text: self.recorder.redact(text, ctx),
                envs=envs,
                disk_before=ctx.disk_before,
                places=ctx.places,
                on_first_spawn=ctx.note_block_started,
                starting=ctx.ahead,
            )
            ctx.ahead = None  # the blocks' now: used or ended there
            try:
                expansion = await blocks.expand()
            except RunRefused as exc:
                return {"status": "failed", "error": str(exc), "isolation": "none"}
            block_errors = blocks.errors
            outcome["isolation"] = blocks.isolation
            text = expansion.text
            if expansion.skipped:
                await write_file(ctx.run_dir / "prompt.md", self.recorder.redact(text, ctx))
                return {
                    **outcome,
                    "status": "skipped",
                    "skip_reason": expansion.skip_reason or "skipped by a block",
                    "output": None,
                }
            if blocks.disk_error is not None:
                (ctx.run_dir / "prompt.md").write_text(text, "utf-8")
                return {
                    **outcome,
                    "status": "failed",
                    "error": "; ".join(block_errors),
                    "output": text,
                }
        else:
            text = task.body
        # What is recorded never holds a secret; the model gets `text` (see redact_input).
        await write_file(ctx.run_dir / "prompt.md", self.recorder.redact(text, ctx))
        outcome["output"] = text
        if block_errors:
            outcome["error"] = "; ".join(block_errors)

        model = task.model_enabled(self.config.model)
        if model is None:
            outcome["status"] = "failed" if block_errors else "succeeded"
            return outcome

        from daycare_cli.run.handoff import hand_off

        step = await hand_off(
            task,
            model,
            text,
            trigger=req.trigger,
            payload=req.payload,
            zone=effective_zone(task, None, self.config.timezone),
            memory_path=ctx.workspace / "memory.md",
            response_path=ctx.run_dir / "response.md",
            secrets=tuple(self.recorder.secrets(ctx)),
            emit=lambda event, **fields: self.recorder.emit(ctx, event, **fields),
            redact=lambda text: self.recorder.redact(text, ctx),
        )
        outcome.update(step)
        if "status" not in step:
            outcome["status"] = "failed" if block_errors else "succeeded"
        return outcome

    async def _prepare_envs(self, task: Task, ctx: RunContext) -> dict[int, Env] | str:
        """The Python environments the blocks need (run/envs.py), built before any block
        runs; a build is logged and recorded in the ledger. A failure is the run's error."""
        from daycare_cli.core.errors import DependencyError
        from daycare_cli.run.envs import EnvCache, prepare_envs

        def emit(event: str, **fields: Any) -> None:
            self.recorder.emit(ctx, event, **fields)
            if event in ("env.built", "env.failed"):
                self.writer.post(
                    writes.add_event(
                        self.actor, event, task=task.id, run=ctx.run_id, detail=fields
                    ),
                    f"an {event} event",
                )

        try:
            return await prepare_envs(EnvCache(self.paths.cache_dir, self.config.deps), task, emit)
        except DependencyError as exc:
            return f"{exc.message}; fix: {exc.hint}" if exc.hint else exc.message

    async def _deliver(self, task: Task, run: Run, change: StreakChange, ctx: RunContext) -> None:
        if not task.notify:
            return
        body_text = run.response or run.output or ""
        events = notify_events(run.status, bool(body_text.strip()), change.event)
        if change.event == "failure-streak":
            events.add("failure")
        if not should_notify(task.notify_on, events, change.event, change.flagged):
            return
        title = f"{task.name}: {run.status}"
        if change.event == "failure-streak":
            title = f"{task.name}: failed {change.streak} times in a row"
        elif change.event == "recovery":
            title = f"{task.name}: recovered"
        body = body_text if run.status == "succeeded" else (run.error or run.skip_reason or "")
        lookup = {n: self.config.notify_target(n) for n in task.notify if "://" not in n}
        urls = resolve_targets(task.notify, lookup)
        errors = await send(urls, Notification(title, body), self.recorder.secrets(ctx))
        for err in errors:
            self.writer.post(
                writes.add_event(
                    self.actor, "notify.failed", task=task.id, run=run.id, detail={"error": err}
                ),
                "a notify.failed event",
            )
