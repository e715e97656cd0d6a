"""The daemon's one loop: pop due fires from the plan, hand them to the runner, sleep, repeat.

Policies (catch-up, overlap, retry, jitter, the global cap) are pure functions in
`core/policy.py`; what fires when is the plan's (`plan.py`); this module runs fires. The
watcher, the control API and webhooks never start runs on their own: they change the plan
(or submit a run) and set `wake`, and the loop recomputes after every wake (STYLE.md,
"one loop, one wakeup"). Time is read only through the injected `Clock`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from daycare_cli.config import Config
from daycare_cli.core.policy import (
    ConcurrencyQueue,
    decide_overlap,
    detect_clock_jump,
)
from daycare_cli.core.schedule import slots_between, upcoming
from daycare_cli.core.task import CronTrigger
from daycare_cli.daemon.ahead import Ahead
from daycare_cli.daemon.clock import Clock, SystemClock
from daycare_cli.daemon.faults import fault_point
from daycare_cli.daemon.pacing import Pacer
from daycare_cli.daemon.plan import CATCH_UP_LIMIT, Plan
from daycare_cli.daemon.planned import Fire, Scheduled
from daycare_cli.daemon.queued import RESUMED, Queued, log_skipped, retrieve, unrun
from daycare_cli.daemon.retries import restore_retries, retry_failed
from daycare_cli.run.runner import Runner, RunRequest
from daycare_cli.store import writes
from daycare_cli.store.database import describe
from daycare_cli.store.paths import Paths
from daycare_cli.store.rows import Run
from daycare_cli.store.runs import PlannedRetry, new_run_id
from daycare_cli.store.state import State
from daycare_cli.store.writer import WriterClosed
from daycare_cli.store.writing import InlineWriter, StateWriter

log = logging.getLogger("daycare.daemon")

MAX_SLEEP = 30.0  # wake at least this often to notice wall-clock jumps
# Scheduled rows are committed on the loop (writer `submit_now`, ~0.25 ms each) for this
# long of a loop turn; the rest of the turn's fires go to the writer thread's group
# commit: 500 tasks due at 9:00 must not hold the loop for 125 ms.
INLINE_BUDGET = 0.002
LATE_TOLERANCE = 60.0  # a fire this late (s) without a later slot passed is still "on time"


class Scheduler:
    """Fires the plan's triggers on time, under the overlap policy and the global cap.

    `state` is read from; every write goes through `writer` (the daemon's writer thread;
    by default each write is committed at once, as the CLI and virtual-time tests want).
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        state: State,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        clock: Clock | None = None,
        writer: StateWriter | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.state = state
        self.writer: StateWriter = writer or InlineWriter(state)
        self.clock: Clock = clock or SystemClock()
        self.wake = asyncio.Event()
        self.plan = Plan(paths, config, state, clock=self.clock, wake=self.wake, writer=self.writer)
        self.ahead = Ahead(paths, config)  # first blocks' sandboxes, started before the slot
        self.stopping = False
        self.gate: ConcurrencyQueue[str] = ConcurrencyQueue(int(config.get("max_concurrent_runs")))
        self.pending: dict[str, tuple[Scheduled, RunRequest]] = {}  # run id -> waiting for gate
        self.waiting: dict[str, int] = {}  # task id -> its runs in `pending`
        # Webhook runs the gate let through, launched paced while a burst arrives.
        self.pacer = Pacer(self.clock, self._launch, lambda: self.stopping)
        self.runs: dict[str, asyncio.Task[Any]] = {}
        self.runs_dirs: dict[str, str] = {}  # task id -> its runs directory
        self.on_event = on_event
        self.fires = 0
        self.inline_until = 0.0  # monotonic: rows committed on the loop until then

    def reconfigure(self, config: Config) -> None:
        """Use a reloaded config: zones, the global cap and the runs started from now on.

        A raised cap starts the runs waiting for it at once.
        """
        self.config = self.plan.config = self.ahead.config = config
        for run_id in self.gate.resize(int(config.get("max_concurrent_runs"))):
            self._start(run_id)
        self.writer.retry_limit = config.state_retry_limit

    # -- the loop ---------------------------------------------------------------------

    async def run_forever(self, heartbeat: Callable[[float], None] | None = None) -> None:
        """Fire due triggers until `stopping`; sleep until the next fire or a wake.

        Before each sleep the loop calls `heartbeat(seconds)`: it promises to turn again
        within that time (its supervisor takes a missed promise for a stuck loop).
        """
        clock = self.clock
        wall, mono = clock.now().timestamp(), clock.monotonic()
        while not self.stopping:
            now_ts = clock.now().timestamp()
            # Wall time that passed beyond monotonic time: a suspend or a clock step.
            jump = detect_clock_jump(wall, now_ts, clock.monotonic() - mono)
            if jump is not None:
                log.warning(
                    "wall clock jumped by %+.0fs (suspend or clock change); replanning", jump
                )
                self.writer.post(
                    writes.add_event("daemon", "clock.jump", detail={"seconds": jump}),
                    "a clock.jump event",
                )
            wall, mono = now_ts, clock.monotonic()
            # Re-read the clock per fire: everything due by now is handled before any run
            # started here gets the loop.
            fired = False
            self.inline_until = clock.monotonic() + INLINE_BUDGET
            while not self.stopping:
                fire = self.plan.pop_due(clock.now().timestamp())
                if fire is None:
                    break
                self.handle(fire)
                fired = True
            if fired:
                if self.writer.pending:
                    # Rows queued for the writer thread (it was busy): let it have the
                    # GIL now and commit them (in one batch), not once the loop next
                    # idles: sleep(0) blocks nothing (A/B, three runs each: the row's p50
                    # 1.1-1.4 -> 0.8-0.9 ms, p99 4.7-5.2 -> 3.5-4.3 ms).
                    time.sleep(0)
                # The runs just launched take their first step (the lock, the first
                # block's code to its sandbox started ahead) before this turn's
                # bookkeeping, which takes a busy loop ~0.3 ms (bench/RESULTS.md).
                await asyncio.sleep(0)
            now_ts = clock.now().timestamp()
            wakes = (self.plan.next_at(), self.ahead.prepare(self.plan, now_ts))
            wake_at = min((at for at in wakes if at is not None), default=None)
            self.wake.clear()
            # From the clock read last: the work since `now_ts` (sandboxes started ahead)
            # must not make the wake-up late by as much.
            timeout = MAX_SLEEP
            if wake_at is not None:
                timeout = min(MAX_SLEEP, max(0.0, wake_at - clock.now().timestamp()))
            if heartbeat is not None:
                heartbeat(timeout)
            await clock.wait(self.wake, timeout)

    def handle(self, fire: Fire) -> None:
        """A fire came due: check it is current, catch up if slots passed, dispatch, re-plan."""
        fault_point("scheduler")
        plan = self.plan
        sched = plan.tasks.get(fire.task_id)
        if fire.run_id is not None:
            # A catch-up run whose row is written already: it runs, or its row says why not.
            self.resume(
                Queued(
                    fire.run_id,
                    fire.task_id,
                    fire.kind,
                    fire.trigger_id,
                    fire.slot,
                    fire.attempt,
                    row=fire.row,
                )
            )
            return
        if sched is None or not sched.task.enabled:
            return  # the task went away or was disabled since this fire was planned
        if sched.generation != fire.generation and fire.kind != "retry":
            # Re-planned since (an edit, a reload): its new fires replace this one. A retry
            # is owed to a slot that failed, whatever the plan became; it keeps its time.
            return
        trigger = sched.task.trigger(fire.trigger_id)
        if trigger is None:
            return
        now = self.clock.now()
        if fire.kind in ("retry", "catch-up") or (
            isinstance(trigger, CronTrigger) and trigger.reboot
        ):
            self.dispatch(sched, fire.trigger_id, fire.slot, kind=fire.kind, attempt=fire.attempt)
            return
        tz = plan.zone(sched.task, trigger)
        later = slots_between(trigger, fire.slot, now, tz=tz, limit=CATCH_UP_LIMIT + 1)
        late = now.timestamp() - fire.slot.timestamp()
        if later or late > max(LATE_TOLERANCE, sched.task.jitter + LATE_TOLERANCE):
            # The machine slept or the loop was stopped: the catch-up policy decides.
            plan.catch_up(sched, trigger, [fire.slot, *later], now)
        else:
            # The row and the trigger's last slot in one commit: a crash leaves no gap.
            self.dispatch(sched, fire.trigger_id, fire.slot, kind="schedule", remember_slot=True)
        # The trigger's state is now this slot (or the newest one caught up): the next
        # fire is the one answer of `upcoming()` from it, as every view computes it.
        last = later[-1] if later else fire.slot
        after = max(now, fire.slot, key=lambda d: d.timestamp())
        nxt = upcoming(trigger, now=after, last_slot=last, tz=tz)
        if nxt:
            plan.schedule_fire(sched, trigger, nxt[0].at)
        else:
            sched.next_fire.pop(trigger.id, None)

    # -- dispatch ---------------------------------------------------------------------

    def dispatch(
        self,
        sched: Scheduled,
        trigger_id: str | None,
        slot: datetime | None,
        *,
        kind: str,
        attempt: int = 1,
        payload: bytes | None = None,
        remember_slot: bool = False,
        delivery_id: str | None = None,
    ) -> RunRequest:
        """Write the run row (unique per slot), apply overlap, and start or queue the run.

        The row, its `run.fired` event, its directory and the trigger's last slot are one
        transaction, handed to the writer, which stamps `queued_at` as it writes the row;
        the run takes its lock and prepares its workspace meanwhile, and awaits the commit
        (`req.row`: the row, or None when the slot or delivery had one) before anything
        runs. A webhook run is written with its payload: a 202 promises it runs even if
        the daemon dies.
        """
        task = sched.task
        now = self.clock.now()
        decision = self._decide(sched, kind)
        skip_reason = None
        if decision == "skip":
            skip_reason = f"a run of this task is still active (overlap: {task.overlap})"
        fired = {
            "trigger": kind,
            "trigger_id": trigger_id,
            "slot": slot.isoformat() if slot else None,
        }
        runs_dir = self.runs_dirs.get(task.id)
        if runs_dir is None:  # built once per task: a webhook burst dispatches thousands
            runs_dir = self.runs_dirs[task.id] = str(self.paths.workspace(task.id) / "runs")
        prepared = self.ahead.take(task.id, trigger_id, slot) if kind == "schedule" else None
        run_id = prepared.ctx.run_id if prepared is not None else new_run_id(now)
        status = "skipped" if skip_reason else "queued"
        # A scheduled fire's row is committed here and now when the writer is idle
        # (store/writer.py `submit_now`): the run starts without a hand-off to its thread.
        # Within the loop turn's budget: past it, group commits keep the loop free.
        inline = kind == "schedule" and self.clock.monotonic() < self.inline_until
        submit = self.writer.submit_now if inline else self.writer.submit
        row = submit(
            writes.create_run(
                task.id,
                kind,
                trigger_id,
                slot,
                status=status,
                attempt=attempt,
                now=now,
                event=(self._actor(kind), "run.fired", fired),
                run_dir=lambda rid: f"{runs_dir}/{rid}",
                remember_slot=remember_slot,
                run_id=run_id,
                payload=payload if status == "queued" and kind == "webhook" else None,
                skip_reason=skip_reason,
                delivery_id=delivery_id,
                clock=self.clock.now,
            )
        )
        self.fires += 1
        req = RunRequest(
            task=task.unpacked(),  # the plan holds it packed
            trigger=kind,
            trigger_id=trigger_id,
            slot=slot,
            attempt=attempt,
            payload=payload,
            run_id=run_id,
            row=row,
            ctx=prepared.ctx if prepared is not None and not skip_reason else None,
        )
        if skip_reason and prepared is not None:
            self.ahead.discard(prepared)
        if skip_reason:
            row.add_done_callback(functools.partial(log_skipped, task.id, run_id, skip_reason))
        else:
            self._route(sched, req, decision)
        return req

    def resume(self, queued: Queued) -> None:
        """Run a run whose row is written `queued` already: a catch-up run, or one a dead
        daemon left queued (a durable webhook, a catch-up). It runs under the same overlap
        policy and global cap as a new fire; a task gone or disabled meanwhile cancels it.
        """
        sched = self.plan.tasks.get(queued.task_id)
        trigger_gone = queued.trigger_id is not None and (
            sched is None or sched.task.trigger(queued.trigger_id) is None
        )
        if sched is None or not sched.task.enabled or trigger_gone:
            if queued.row is not None:
                queued.row.add_done_callback(retrieve)
            error = "its task or trigger was removed or disabled before the run started"
            self.writer.post(unrun(queued.run_id, "cancelled", error), f"run {queued.run_id}")
            log.info("%s: queued run %s cancelled: task changed", queued.task_id, queued.run_id)
            return
        req = RunRequest(
            task=sched.task.unpacked(),  # the plan holds it packed
            trigger=queued.trigger,
            trigger_id=queued.trigger_id,
            slot=queued.slot,
            attempt=queued.attempt,
            payload=queued.payload,
            run_id=queued.run_id,
            row=queued.row,
        )
        decision = self._decide(sched, queued.trigger)
        if decision == "skip":
            reason = f"a run of this task is still active (overlap: {sched.task.overlap})"
            self.writer.post(unrun(queued.run_id, "skipped", reason), f"run {queued.run_id}")
            log.info("%s: run %s skipped: %s", sched.task.id, queued.run_id, reason)
            return
        self._route(sched, req, decision)

    def adopt(self, rows: list[Run]) -> None:
        """Run the queued runs a dead daemon left (oldest first), each once."""
        for run in rows:
            self.resume(Queued.of(run))
        if rows:
            log.info("%d queued run(s) left by the previous daemon resumed", len(rows))

    def _decide(self, sched: Scheduled, kind: str) -> str:
        task = sched.task
        decision = decide_overlap(task.overlap, len(sched.active), len(sched.queued))
        if kind == "catch-up" and decision == "skip" and task.overlap != "replace":
            # Slots the catch-up policy chose to run wait for each other instead of being
            # skipped as overlaps of one another.
            decision = "queue"
        return decision

    def _route(self, sched: Scheduled, req: RunRequest, decision: str) -> None:
        if decision == "queue":
            sched.own_runs()[1].append(req)
            return
        if decision == "cancel_and_start":
            for other in list(sched.active.values()):
                other.cancel()
        self.admit(sched, req)

    def admit(self, sched: Scheduled, req: RunRequest) -> None:
        """Start now if the global cap allows, else wait in FIFO order."""
        assert req.run_id is not None
        self.pending[req.run_id] = (sched, req)
        self.waiting[sched.task.id] = self.waiting.get(sched.task.id, 0) + 1
        if self.gate.offer(req.run_id):
            self._start(req.run_id)

    def _start(self, run_id: str) -> None:
        """Launch a run the gate let through; a webhook run during a burst is paced."""
        if self.pending[run_id][1].trigger == "webhook":
            self.pacer.launch(run_id)
        else:
            self._launch(run_id)

    def _launch(self, run_id: str) -> None:
        sched, req = self.pending.pop(run_id)
        left = self.waiting.pop(sched.task.id, 1) - 1
        if left:
            self.waiting[sched.task.id] = left
        runner = Runner(
            self.paths,
            self.config,
            self.state,
            actor=self._actor(req.trigger),
            on_event=self.on_event,
            writer=self.writer,
        )
        if sched.task.overlap == "queue":
            req.wait_for_lock = sched.task.run_timeout
        atask = asyncio.get_running_loop().create_task(self._run(runner, sched, req))
        sched.own_runs()[0][run_id] = atask
        self.runs[run_id] = atask

    async def _run(self, runner: Runner, sched: Scheduled, req: RunRequest) -> None:
        # A cancelled run (`overlap: replace`, a shutdown) is recorded by the runner; the
        # bookkeeping below runs, then the cancellation goes on to whoever awaits the task.
        assert req.run_id is not None
        run = None
        try:
            run = await runner.run(req)
        except WriterClosed:
            pass  # the daemon is stopping with its writes undone; the next start settles it
        except Exception as exc:
            # The runner settles its own failures; this is a failure of the settling. An
            # OSError is the machine's (no file descriptor left, a full disk): one line;
            # anything else is a bug: its traceback.
            trace = None if isinstance(exc, OSError) else exc
            log.error("run %s of %s: %s", req.run_id, sched.task.id, describe(exc), exc_info=trace)
            self._finish_crashed(req.run_id, exc)
        finally:
            sched.own_runs()[0].pop(req.run_id, None)
            self.runs.pop(req.run_id, None)
            if not self.stopping:
                for started in self.gate.done(req.run_id):
                    self._start(started)
                if sched.queued and not sched.active:
                    self.admit(sched, sched.own_runs()[1].pop(0))
        if run is None:
            if req.slot is not None and req.row is not None and req.row.done():
                log.info(
                    "%s/%s: slot %s already fired; not firing it twice",
                    sched.task.id,
                    req.trigger_id,
                    req.slot.isoformat(),
                )
            return
        log.info("%s: run %s %s (%s ms)", sched.task.id, run.id, run.status, run.duration_ms)
        if self.stopping and run.status in ("interrupted", "cancelled"):
            return  # neither retried nor archived: the next start decides
        self.after_run(sched, req, run.status)

    def _finish_crashed(self, run_id: str, exc: Exception) -> None:
        """A run whose runner raised never stays `running`: it is recorded failed (a run
        that the runner did end keeps its end)."""
        error = f"internal error: {describe(exc)}"
        self.writer.post(unrun(run_id, "failed", error), f"run {run_id}")

    def after_run(self, sched: Scheduled, req: RunRequest, status: str) -> None:
        """Retry a failure (never past the next slot); archive a one-off task when done."""
        task = sched.task
        if req.trigger in ("manual", "webhook"):
            return
        failed = status in ("failed", "timed_out") and req.slot is not None
        if failed and not self.stopping and retry_failed(self.plan, sched, req, self.clock.now()):
            self.wake.set()  # its fire is on the heap now
            return
        if task.once and task.id in self.plan.tasks:
            self.plan.archive(task.id, reason="ran")

    def restore_retries(self, planned: list[PlannedRetry]) -> None:
        """Plan again the retries a stopped or killed daemon had planned (`retries.py`)."""
        restored = restore_retries(self.plan, planned, self.clock.now())
        if restored:
            log.info("%d retry(ies) planned by the previous daemon planned again", restored)
            self.wake.set()

    def replan_lost(self) -> list[str]:
        """Plan again the tasks a failure of the loop left without a next fire (a fire is
        taken off the heap before it is handled); returns their ids."""
        lost = self.plan.replan_unplanned(self.clock.now())
        if lost:
            log.warning("re-planned %d task(s) the loop's failure left unplanned", len(lost))
            self.wake.set()
        return lost

    def replan_all(self) -> None:
        """Plan every task afresh (the default zone changed); no catch-up."""
        self.plan.replan_all()
        self.wake.set()

    def submit(
        self,
        task_id: str,
        *,
        kind: str,
        trigger_id: str | None = None,
        payload: bytes | None = None,
    ) -> str | None:
        """Start a manual or webhook run through the same overlap and cap as scheduled ones.

        Returns its run id (None for an unknown task); see `enqueue` to await its row.
        """
        req = self.enqueue(task_id, kind=kind, trigger_id=trigger_id, payload=payload)
        return None if req is None else req.run_id

    def enqueue(
        self,
        task_id: str,
        *,
        kind: str,
        trigger_id: str | None = None,
        payload: bytes | None = None,
        delivery_id: str | None = None,
    ) -> RunRequest | None:
        """`submit`, returning the request: `await req.row` until its row is committed."""
        sched = self.plan.tasks.get(task_id)
        if sched is None:
            return None
        if kind == "webhook":
            self.pacer.request_seen()
        req = self.dispatch(
            sched, trigger_id, None, kind=kind, payload=payload, delivery_id=delivery_id
        )
        self.wake.set()
        return req

    def settle_on_stop(self) -> None:
        """At a stop: mark every run that will not run here `interrupted`, except queued
        runs the next start resumes (webhook, catch-up, scheduled and retry runs).

        Waiting manual runs are interrupted: the person who asked is gone with the socket.
        """
        error = "daemon stopped before the run started"
        waiting = [req for _, req in self.pending.values()]
        waiting += [req for sched in self.plan.tasks.values() for req in sched.queued]
        for req in waiting:
            if req.run_id and req.trigger not in RESUMED:
                self.writer.post(unrun(req.run_id, "interrupted", error), f"run {req.run_id}")

    def queue_depth(self, task_id: str) -> int:
        """Runs of a task waiting to start (overlap queue plus the global gate)."""
        sched = self.plan.tasks.get(task_id)
        waiting = self.waiting.get(task_id, 0)  # O(1): asked on every webhook request
        return waiting + (len(sched.queued) if sched else 0)

    @staticmethod
    def _actor(kind: str) -> str:
        return {"manual": "cli", "webhook": "webhook"}.get(kind, "schedule")
