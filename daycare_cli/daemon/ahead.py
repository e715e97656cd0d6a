"""Sandboxes started before their slot: a scheduled fire's first block waits, started.

A block's sandbox and interpreter take 15–25 ms to start (bubblewrap's namespaces and
mounts, then Python; bench/bench_sandbox.py), more than the rest of a fire together.
So `LEAD` seconds before a scheduled fire of an `execute: true` task, the daemon draws
the run's id and starts the sandbox its first block will run in (run/sandbox.py
`start_spare`, planned exactly as that block's launch would be), and makes the run's
directory ready (its log, the disk its blocks start from, daycare's places: what a run
otherwise does in a worker thread at its slot). At the slot the run is written with that
id, takes the task's lock and hands the block's code to the waiting interpreter, all on
the event loop with no hand-off to a thread (bench/RESULTS.md: each costs a busy run
milliseconds). Nothing runs before the slot: the interpreter waits for its code on stdin,
and the lock is not taken ahead (a manual run in that second is not refused).

At most `max_concurrent_runs` are started ahead at a time (the earliest fires first):
more could not run at once anyway, and each holds an interpreter's memory while it waits.
What is started ahead and not used (the task changed or went away, the fire was skipped
by its overlap policy, the daemon stops) is ended, and the run directory it made is
removed. A first block that needs a Python environment of its own (PEP 723), a task
without blocks, and retries and catch-up runs start as before, at their time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from daycare_cli.config import Config
from daycare_cli.core.prompt import find_blocks
from daycare_cli.core.requirements import script_metadata
from daycare_cli.core.task import Task
from daycare_cli.daemon.planned import Fire
from daycare_cli.run.rundir import RunContext  # light: a run's paths (no block machinery)
from daycare_cli.store.paths import LockBusy, Paths
from daycare_cli.store.runs import new_run_id

if TYPE_CHECKING:
    from daycare_cli.daemon.plan import Plan
    from daycare_cli.run.sandbox import Spare

# The block machinery (run/blocks.py, run/sandbox.py and what they import) is imported at
# the first fire with blocks, not by every daemon's start: a daemon with no such task
# never holds it.

log = logging.getLogger("daycare.daemon")

LEAD = 1.0  # seconds before a fire its first block's sandbox is started
STALE = 5.0  # seconds after its fire time an unused one is ended

Key = tuple[str, str, float]  # task id, trigger id, slot (epoch seconds)


@dataclass
class Prepared:
    """A run made ready before its slot: its context (its id, its directory: `ctx.ready`,
    the set-up under way or done; its first block's sandbox: `ctx.ahead`)."""

    at: float  # the fire's time (epoch seconds)
    ctx: RunContext


class Ahead:
    """The fires whose first block's sandbox is being started, or waits, before its slot."""

    def __init__(self, paths: Paths, config: Config) -> None:
        self.paths = paths
        self.config = config
        self.prepared: dict[Key, Prepared] = {}
        self._ending: set[asyncio.Future[None]] = set()

    def prepare(self, plan: Plan, now: float) -> float | None:
        """Start the sandboxes of the scheduled fires due within LEAD seconds of `now`,
        end those whose fire went by unused; returns when to look again (epoch seconds:
        LEAD before the next fire not yet in reach, or when one prepared goes stale), or
        None."""
        for key, prepared in list(self.prepared.items()):
            if prepared.at + STALE <= now:
                self.drop(key)
        due, beyond = _fires_until(plan.heap, now + LEAD)
        room = self.config.max_concurrent_runs - len(self.prepared)
        for fire in due:
            if room <= 0:
                # As many as may run at once: 500 tasks due at 9:00 start 500 sandboxes
                # one by one as the cap lets their runs through, not all at 8:59:59.
                break
            key = (fire.task_id, fire.trigger_id, fire.slot.timestamp())
            if fire.kind != "schedule" or fire.run_id is not None or key in self.prepared:
                continue
            sched = plan.tasks.get(fire.task_id)
            if sched is None or sched.generation != fire.generation or not sched.task.execute:
                continue
            task = sched.task.unpacked()
            blocks = find_blocks(task.body)
            if not blocks or script_metadata(blocks[0].code) is not None:
                continue
            self._start(key, task, fire)
            room -= 1
        wake = [beyond - LEAD] if beyond is not None else []
        # A little after it goes stale: a timer early by a hair must not spin the loop.
        wake += [prepared.at + STALE + 0.05 for prepared in self.prepared.values()]
        return min(wake, default=None)

    def take(self, task_id: str, trigger_id: str | None, slot: datetime | None) -> Prepared | None:
        """The run prepared for this fire, now the run's own; None when there is none."""
        if trigger_id is None or slot is None:
            return None
        return self.prepared.pop((task_id, trigger_id, slot.timestamp()), None)

    def drop(self, key: Key) -> None:
        """End a prepared run that will not run, and remove the directory it made."""
        prepared = self.prepared.pop(key, None)
        if prepared is not None:
            self.discard(prepared)

    def discard(self, prepared: Prepared) -> None:
        """End `prepared`, taken and then not run (its fire was skipped)."""
        ending = asyncio.ensure_future(_end(prepared))
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    async def close(self) -> None:
        """End everything prepared (the daemon stops)."""
        for key in list(self.prepared):
            self.drop(key)
        if self._ending:
            await asyncio.wait(list(self._ending), timeout=5)

    def _start(self, key: Key, task: Task, fire: Fire) -> None:
        run_id = new_run_id(datetime.fromtimestamp(fire.at, UTC))
        ctx = RunContext.of(self.paths.workspace(task.id), run_id)
        run = {"id": run_id, "trigger": "schedule", "slot": fire.slot.isoformat()}
        ctx.ready = asyncio.ensure_future(self._set_up(ctx))
        ctx.ahead = asyncio.ensure_future(self._spare(task, run, ctx, ctx.ready))
        self.prepared[key] = Prepared(fire.at, ctx)

    async def _set_up(self, ctx: RunContext) -> LockBusy | None:
        """The run's set-up but its lock (the run takes it at its slot), in a worker thread."""
        from daycare_cli.run.machinery import ensure_block_machinery
        from daycare_cli.run.runner import set_up

        await ensure_block_machinery(self.config)  # its imports, off the loop
        return await asyncio.to_thread(set_up, ctx, self.paths, None, None, execute=True)

    async def _spare(
        self,
        task: Task,
        run: dict[str, str],
        ctx: RunContext,
        ready: asyncio.Future[LockBusy | None],
    ) -> Spare | None:
        """The sandbox of the task's first block, planned as the run will plan it."""
        await asyncio.wait([ready])
        if ready.cancelled() or ready.exception() is not None:
            return None  # the run fails with the set-up's error, before any block
        from daycare_cli.run.blocks import RunBlocks, resolve_env
        from daycare_cli.run.sandbox import start_spare

        try:
            env, _used = resolve_env(task, self.config)
        except LookupError:
            return None  # the run fails with the error, before any block
        blocks = RunBlocks(
            paths=self.paths,
            config=self.config,
            task=task,
            run=run,
            files_dir=ctx.files_dir,
            artifacts_dir=ctx.artifacts_dir,
            env=env,
            places=ctx.places,
        )
        return await start_spare(blocks.spec(find_blocks(task.body)[0]))


async def _end(prepared: Prepared) -> None:
    from daycare_cli.run.blocks import end_started

    ctx = prepared.ctx
    if ctx.ahead is not None:
        await end_started(ctx.ahead)
    if ctx.ready is not None:
        await asyncio.wait([ctx.ready])  # not cancelled: its thread would go on making it
    # Nothing of it is kept: the run never had a row.
    await asyncio.to_thread(ctx.discard)


def _fires_until(heap: list[Fire], until: float) -> tuple[list[Fire], float | None]:
    """The fires of a heap due by `until`, and the earliest time beyond it: a walk of the
    heap's top, never of all of it (10,000 tasks plan 10,000 fires)."""
    due: list[Fire] = []
    beyond: float | None = None
    stack = [0] if heap else []
    while stack:
        i = stack.pop()
        fire = heap[i]
        if fire.at > until:
            beyond = fire.at if beyond is None else min(beyond, fire.at)
            continue
        due.append(fire)
        stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(heap))
    due.sort()
    return due, beyond
