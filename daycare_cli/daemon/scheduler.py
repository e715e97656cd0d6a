"""The daemon's one loop: pop due fires from a heap, hand them to the runner, sleep, repeat.

Policies (catch-up, overlap, retry, jitter, the global cap) are pure functions in
`core/policy.py`; this module only applies them. The watcher, the control API and
webhooks never start runs on their own: they change the plan (or submit a run) and set
`wake`, and the loop recomputes after every wake (STYLE.md, "one loop, one wakeup").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from daycare_cli.config import Config
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.policy import (
    ConcurrencyQueue,
    apply_jitter,
    decide_overlap,
    default_catch_up_window,
    detect_clock_jump,
    plan_catch_up,
    plan_retry,
)
from daycare_cli.core.schedule import at_instant, next_fires, slots_between
from daycare_cli.core.task import (
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    Task,
    Trigger,
    effective_zone,
)
from daycare_cli.run.runner import Runner, RunRequest
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State
from daycare_cli.store.tasks import TaskEntry, TaskStore

log = logging.getLogger("daycare.daemon")

MAX_SLEEP = 30.0  # wake at least this often to notice wall-clock jumps
LATE_TOLERANCE = 60.0  # a fire this late (s) without a later slot passed is still "on time"
CATCH_UP_LIMIT = 100
EARLY_WAKE = 0.002  # wake this much before a fire and sleep the rest precisely
CATCH_UP_SCAN = 1000  # newest missed slots looked at after a long sleep


@dataclass(order=True)
class Fire:
    """One planned fire of a trigger: when to start and which slot it is for."""

    at: float
    seq: int
    task_id: str = field(compare=False)
    trigger_id: str = field(compare=False)
    slot: datetime = field(compare=False)
    kind: str = field(compare=False, default="schedule")  # schedule | catch-up | retry
    attempt: int = field(compare=False, default=1)
    generation: int = field(compare=False, default=0)


class PlanningFailed(Exception):
    """Planning raised for some tasks of a load; every other task was loaded."""

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{task}: {type(e).__name__}: {e}" for task, e in failures))


@dataclass
class Scheduled:
    """A task as the daemon holds it: the last good version and what is running."""

    task: Task
    digest: str
    generation: int
    error: TaskFileError | None = None  # an invalid edit; the old version stays scheduled
    active: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    queued: list[RunRequest] = field(default_factory=list)
    next_fire: dict[str, datetime] = field(default_factory=dict)


class Scheduler:
    """Holds every valid task's triggers in a heap and fires them on time."""

    def __init__(
        self,
        paths: Paths,
        config: Config,
        state: State,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.state = state
        self.store = TaskStore(paths)
        self.tasks: dict[str, Scheduled] = {}
        self.broken: dict[str, TaskFileError] = {}  # files with no good version at all
        self.heap: list[Fire] = []
        self.seq = itertools.count()
        self.wake = asyncio.Event()
        self.stopping = False
        self.gate: ConcurrencyQueue[str] = ConcurrencyQueue(
            int(config.get("max_concurrent_runs") or 4)
        )
        self.pending: dict[str, tuple[Scheduled, RunRequest]] = {}  # run id -> waiting for gate
        self.runs: dict[str, asyncio.Task[Any]] = {}
        self.on_event = on_event
        self.started_at = datetime.now(UTC)
        self.fires = 0
        self.planned: list[tuple[str, str, datetime]] = []  # new triggers, see flush_planned

    # -- loading ----------------------------------------------------------------------

    def zone(self, task: Task, trigger: Trigger | None = None) -> str:
        """The zone a trigger is evaluated in: its own, the task's, else config/system."""
        return effective_zone(task, trigger, self.config.timezone)

    def load_all(
        self, *, starting: bool, actor: str = "daemon", entries: list[TaskEntry] | None = None
    ) -> None:
        """(Re)read every task file; on start, also catch up and fire `@reboot` triggers.

        `entries`: the files already read (off the loop, by the watcher); else read here.
        """
        seen: set[str] = set()
        failed: list[tuple[str, Exception]] = []
        for entry in self.store.list() if entries is None else entries:
            seen.add(entry.id)
            try:
                self.apply_entry(entry, starting=starting, actor=actor)
            except Exception as exc:  # one task's planning must not keep the rest unloaded
                failed.append((entry.id, exc))
        for task_id in list(self.tasks):
            if task_id not in seen:
                self.remove(task_id, actor=actor)
        for task_id in list(self.broken):
            if task_id not in seen:
                del self.broken[task_id]
        self.flush_planned()
        self.wake.set()
        if failed:
            raise PlanningFailed(failed)

    def flush_planned(self) -> None:
        """Write where new triggers were planned from (one commit for a whole load)."""
        if self.planned:
            self.state.plan_from(self.planned)
            self.planned = []

    def apply_entry(self, entry: TaskEntry, *, starting: bool = False, actor: str = "file") -> None:
        """Schedule a new or changed task file; an invalid edit keeps the old version."""
        current = self.tasks.get(entry.id)
        if entry.task is None:
            assert entry.error is not None
            if current is not None:
                if current.error is None or str(current.error) != str(entry.error):
                    current.error = entry.error
                    log.warning(
                        "invalid edit of %s, keeping the last good version: %s",
                        entry.id,
                        entry.error,
                    )
                    self.state.add_event(
                        actor, "task.invalid", task=entry.id, detail={"error": str(entry.error)}
                    )
            elif str(self.broken.get(entry.id)) != str(entry.error):
                self.broken[entry.id] = entry.error
                log.warning("task file %s is invalid: %s", entry.id, entry.error)
                self.state.add_event(
                    actor, "task.invalid", task=entry.id, detail={"error": str(entry.error)}
                )
            return
        self.broken.pop(entry.id, None)
        if current is not None and current.digest == entry.digest:
            current.error = None
            return
        generation = (current.generation + 1) if current else 1
        sched = Scheduled(entry.task, entry.digest, generation)
        if current is not None:
            sched.active, sched.queued = current.active, current.queued
        self.tasks[entry.id] = sched
        if not starting:
            # Loading at start is not a change: one `daemon.started` event covers it, and
            # 10,000 one-row transactions would cost a second of start-up.
            kind = "task.changed" if current else "task.added"
            log.info("%s %s", kind.split(".")[1], entry.id)
            self.state.add_event(actor, kind, task=entry.id, detail={"generation": generation})
        self.plan_task(sched, catch_up=starting or current is None, starting=starting)
        if not starting:
            self.flush_planned()  # a load flushes once at its end
        self.wake.set()

    def remove(self, task_id: str, *, actor: str = "file") -> None:
        """Unschedule a task whose file is gone; its history and running runs stay."""
        self.broken.pop(task_id, None)
        if self.tasks.pop(task_id, None) is not None:
            log.info("removed %s", task_id)
            self.state.add_event(actor, "task.removed", task=task_id)
            self.wake.set()

    # -- planning ---------------------------------------------------------------------

    def push(self, fire: Fire) -> None:
        heapq.heappush(self.heap, fire)

    def plan_task(self, sched: Scheduled, *, catch_up: bool, starting: bool) -> None:
        """Push the next fire of every trigger; with `catch_up`, first handle missed slots."""
        task = sched.task
        sched.next_fire.clear()
        if not task.enabled:
            return
        now = datetime.now(UTC)
        for trigger in task.triggers:
            if isinstance(trigger, CronTrigger) and trigger.reboot:
                if starting:
                    self.push(
                        Fire(
                            now.timestamp(),
                            next(self.seq),
                            task.id,
                            trigger.id,
                            now,
                            "schedule",
                            generation=sched.generation,
                        )
                    )
                continue
            if not isinstance(trigger, CronTrigger | AtTrigger | EveryTrigger):
                continue
            tz = self.zone(task, trigger)
            tstate = self.state.get_trigger_state(task.id, trigger.id)
            last = _parse_time(tstate.last_slot) if tstate else None
            anchor = last if isinstance(trigger, EveryTrigger) and last else None
            if isinstance(trigger, EveryTrigger) and anchor is None:
                # From the daemon's start (one instant for all, so simultaneous intervals
                # fire in one wake-up), or from now for a task added later.
                anchor = self.started_at if starting else now
            if catch_up:
                missed: list[datetime] = []
                if isinstance(trigger, AtTrigger):
                    at = at_instant(trigger, tz)
                    if at.timestamp() <= now.timestamp() and (
                        last is None or last.timestamp() < at.timestamp()
                    ):
                        missed = [at]
                elif last is not None:
                    missed = self.missed_since(sched, trigger, last, now)
                if missed:
                    self.catch_up(sched, trigger, missed, now)
            if last is None:
                self.planned.append((task.id, trigger.id, anchor or now))
            after = now
            nxt = next_fires(trigger, after, 1, tz=tz, anchor=anchor)
            if nxt:
                self.schedule_fire(sched, trigger, nxt[0])

    def schedule_fire(
        self, sched: Scheduled, trigger: Trigger, slot: datetime, kind: str = "schedule"
    ) -> None:
        start = (
            apply_jitter(slot, sched.task.jitter, random.random()) if sched.task.jitter else slot
        )
        sched.next_fire[trigger.id] = slot
        self.push(
            Fire(
                start.timestamp(),
                next(self.seq),
                sched.task.id,
                trigger.id,
                slot,
                kind,
                generation=sched.generation,
            )
        )

    def window(self, task: Task, trigger: Trigger, now: datetime) -> float:
        """Seconds of missed time that catch-up considers (task setting or one period)."""
        tz = self.zone(task, trigger)
        return task.catch_up_window or default_catch_up_window(trigger, tz=tz, now=now)

    def missed_since(
        self, sched: Scheduled, trigger: Trigger, last: datetime, now: datetime
    ) -> list[datetime]:
        """Slots after `last` up to now, newest CATCH_UP_SCAN at most, within the window.

        Older slots (a week of `every: 1s` after a long sleep) are only counted in an
        event, not recorded one row each.
        """
        tz = self.zone(sched.task, trigger)
        window = self.window(sched.task, trigger, now)
        # The window includes a slot exactly on its edge; slots_between excludes its start.
        edge = now - timedelta(seconds=window, milliseconds=1)
        start = max(last, edge, key=lambda d: d.timestamp())
        if isinstance(trigger, EveryTrigger) and start is not last:
            # Keep every slots aligned to their anchor.
            k = int((start.timestamp() - last.timestamp()) // trigger.seconds)
            start = last + timedelta(seconds=k * trigger.seconds)
        slots = slots_between(trigger, start, now, tz=tz, limit=CATCH_UP_SCAN)
        older = slots_between(trigger, last, start, tz=tz, limit=CATCH_UP_SCAN)
        if older:
            self.state.add_event(
                "daemon",
                "catch_up.dropped",
                task=sched.task.id,
                detail={"trigger": trigger.id, "slots": len(older), "before": start.isoformat()},
            )
        return slots[-CATCH_UP_SCAN:]

    def catch_up(
        self, sched: Scheduled, trigger: Trigger, missed: list[datetime], now: datetime
    ) -> None:
        """Apply the task's `catch_up` policy to slots that passed while nothing ran."""
        task = sched.task
        window = self.window(task, trigger, now)
        plan = plan_catch_up(
            task.catch_up, missed[-CATCH_UP_LIMIT:], now=now, window=window, limit=CATCH_UP_LIMIT
        )
        dropped = missed[:-CATCH_UP_LIMIT] if len(missed) > CATCH_UP_LIMIT else []
        skipped = dropped + plan.missed
        if skipped:
            self.state.record_missed(task.id, trigger.id, skipped, now=now)
            log.info(
                "%s/%s: %d missed slot(s) recorded (catch_up: %s)",
                task.id,
                trigger.id,
                len(skipped),
                task.catch_up,
            )
        for slot, start_at in plan.run:
            self.push(
                Fire(
                    start_at.timestamp(),
                    next(self.seq),
                    task.id,
                    trigger.id,
                    slot,
                    "catch-up",
                    generation=sched.generation,
                )
            )
        latest = max(missed, key=lambda d: d.timestamp())
        self.state.set_trigger_state(task.id, trigger.id, last_slot=latest.isoformat())
        if not plan.run and self.spent(task, now):
            # A one-off whose only time passed unrun: recorded missed, nothing left to fire.
            self.archive(task.id, reason="missed")

    def spent(self, task: Task, now: datetime) -> bool:
        """True for a task whose every trigger is an `at` time that has passed."""
        return bool(task.triggers) and all(
            isinstance(t, AtTrigger)
            and at_instant(t, self.zone(task, t)).timestamp() <= now.timestamp()
            for t in task.triggers
        )

    # -- the loop ---------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Fire due triggers until `stopping`; sleep until the next fire or a wake."""
        wall, mono = time.time(), time.monotonic()
        while not self.stopping:
            now_ts = time.time()
            # Wall time that passed beyond monotonic time: a suspend or a clock step.
            jump = detect_clock_jump(wall, now_ts, time.monotonic() - mono)
            if jump is not None:
                log.warning(
                    "wall clock jumped by %+.0fs (suspend or clock change); replanning", jump
                )
                self.state.add_event("daemon", "clock.jump", detail={"seconds": jump})
            wall, mono = now_ts, time.monotonic()
            # Re-read the clock per fire: everything due by now is handled before any run
            # started here gets the loop.
            if self.heap and 0 < self.heap[0].at - time.time() < EARLY_WAKE:
                # The loop's timer rounds up to whole milliseconds; the last stretch is a
                # precise sleep instead (at most EARLY_WAKE, once per wake-up).
                time.sleep(self.heap[0].at - time.time())
            while self.heap and self.heap[0].at <= time.time() and not self.stopping:
                fire = heapq.heappop(self.heap)
                self.handle(fire)
            timeout = MAX_SLEEP
            if self.heap:
                due = self.heap[0].at - time.time() - EARLY_WAKE
                timeout = min(MAX_SLEEP, max(0.0, due))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass

    def handle(self, fire: Fire) -> None:
        """A fire came due: check it is current, catch up if slots passed, dispatch, re-plan."""
        sched = self.tasks.get(fire.task_id)
        if sched is None or sched.generation != fire.generation or not sched.task.enabled:
            return  # the task changed or went away since this fire was planned
        trigger = sched.task.trigger(fire.trigger_id)
        if trigger is None:
            return
        now = datetime.now(UTC)
        if fire.kind in ("retry", "catch-up") or (
            isinstance(trigger, CronTrigger) and trigger.reboot
        ):
            self.dispatch(sched, fire.trigger_id, fire.slot, kind=fire.kind, attempt=fire.attempt)
            return
        tz = self.zone(sched.task, trigger)
        later = slots_between(trigger, fire.slot, now, tz=tz, limit=CATCH_UP_LIMIT + 1)
        late = now.timestamp() - fire.slot.timestamp()
        if later or late > max(LATE_TOLERANCE, sched.task.jitter + LATE_TOLERANCE):
            # The machine slept or the loop was stopped: the catch-up policy decides.
            self.catch_up(sched, trigger, [fire.slot, *later], now)
        else:
            # The row and the trigger's last slot in one commit: a crash leaves no gap.
            self.dispatch(sched, fire.trigger_id, fire.slot, kind="schedule", remember_slot=True)
        anchor = fire.slot if isinstance(trigger, EveryTrigger) else None
        if later and isinstance(trigger, EveryTrigger):
            anchor = later[-1]
        nxt = next_fires(
            trigger, max(now, fire.slot, key=lambda d: d.timestamp()), 1, tz=tz, anchor=anchor
        )
        if nxt:
            self.schedule_fire(sched, trigger, nxt[0])
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
    ) -> str | None:
        """Create the run row (unique per slot), apply overlap, and start or queue it.

        The row, its `run.fired` event, its directory and the trigger's last slot are one
        commit; a run that can start at once is written `running` in that same commit, so
        a burst of simultaneous fires costs one transaction each before its run starts.
        """
        task = sched.task
        now = datetime.now(UTC)
        decision = decide_overlap(task.overlap, len(sched.active), len(sched.queued))
        if kind == "catch-up" and decision == "skip" and task.overlap != "replace":
            # Slots the catch-up policy chose to run wait for each other instead of being
            # skipped as overlaps of one another.
            decision = "queue"
        gate_free = len(self.gate.active) < self.gate.limit and not self.gate.pending
        starts_now = decision in ("start", "cancel_and_start") and gate_free
        fired = {
            "trigger": kind,
            "trigger_id": trigger_id,
            "slot": slot.isoformat() if slot else None,
        }
        runs_dir = self.paths.workspace(task.id) / "runs"
        run = self.state.create_run(
            task.id,
            kind,
            trigger_id,
            slot,
            status="running" if starts_now else "queued",
            attempt=attempt,
            now=now,
            event=(self._actor(kind), "run.fired", fired),
            run_dir=lambda run_id: runs_dir / run_id,
            remember_slot=remember_slot,
        )
        if run is None:
            log.info(
                "%s/%s: slot %s already fired; not firing it twice",
                task.id,
                trigger_id,
                slot.isoformat() if slot else "-",
            )
            return None
        self.fires += 1
        req = RunRequest(
            task=task,
            trigger=kind,
            trigger_id=trigger_id,
            slot=slot,
            attempt=attempt,
            payload=payload,
            run_id=run.id,
            started=starts_now,
        )
        if decision == "skip":
            reason = f"a run of this task is still active (overlap: {task.overlap})"
            self.state.finish_run(run.id, status="skipped", skip_reason=reason, now=now)
            log.info("%s: run %s skipped: %s", task.id, run.id, reason)
        elif decision == "queue":
            sched.queued.append(req)
        else:
            if decision == "cancel_and_start":
                for other in list(sched.active.values()):
                    other.cancel()
            self.admit(sched, req)
        return run.id

    def admit(self, sched: Scheduled, req: RunRequest) -> None:
        """Start now if the global cap allows, else wait in FIFO order."""
        assert req.run_id is not None
        self.pending[req.run_id] = (sched, req)
        if self.gate.offer(req.run_id):
            self._start(req.run_id)

    def _start(self, run_id: str) -> None:
        sched, req = self.pending.pop(run_id)
        runner = Runner(
            self.paths,
            self.config,
            self.state,
            actor=self._actor(req.trigger),
            on_event=self.on_event,
        )
        if sched.task.overlap == "queue":
            req.wait_for_lock = sched.task.run_timeout
        atask = asyncio.get_running_loop().create_task(self._run(runner, sched, req))
        sched.active[run_id] = atask
        self.runs[run_id] = atask

    async def _run(self, runner: Runner, sched: Scheduled, req: RunRequest) -> None:
        assert req.run_id is not None
        run = None
        try:
            run = await runner.run(req)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("run %s crashed", req.run_id)
        finally:
            sched.active.pop(req.run_id, None)
            self.runs.pop(req.run_id, None)
            if not self.stopping:
                for started in self.gate.done(req.run_id):
                    self._start(started)
                if sched.queued and not sched.active:
                    self.admit(sched, sched.queued.pop(0))
        if run is None:
            return
        log.info("%s: run %s %s (%s ms)", sched.task.id, run.id, run.status, run.duration_ms)
        if self.stopping and run.status in ("interrupted", "cancelled"):
            return  # neither retried nor archived: the next start decides
        self.after_run(sched, req, run.status)

    def after_run(self, sched: Scheduled, req: RunRequest, status: str) -> None:
        """Retry a failure (never past the next slot); archive a one-off task when done."""
        task = sched.task
        if req.trigger in ("manual", "webhook"):
            return
        if status in ("failed", "timed_out") and req.slot is not None and not self.stopping:
            trigger = task.trigger(req.trigger_id or "")
            next_slot = sched.next_fire.get(req.trigger_id or "")
            at = plan_retry(
                req.attempt,
                task.retries,
                task.retry_delay,
                now=datetime.now(UTC),
                next_slot=next_slot,
                rand=random.random(),
            )
            if at is not None and trigger is not None:
                current = self.tasks.get(task.id)
                gen = current.generation if current else sched.generation
                self.push(
                    Fire(
                        at.timestamp(),
                        next(self.seq),
                        task.id,
                        trigger.id,
                        req.slot,
                        "retry",
                        attempt=req.attempt + 1,
                        generation=gen,
                    )
                )
                log.info("%s: retry %d at %s", task.id, req.attempt + 1, at.isoformat())
                self.wake.set()
                return
        if task.once and task.id in self.tasks:
            self.archive(task.id, reason="ran")

    def archive(self, task_id: str, *, reason: str) -> None:
        """Move a spent one-off task's file to `.archive/` and unschedule it."""
        try:
            target = self.store.archive(task_id)
        except Exception as exc:  # the file may already be gone
            log.warning("could not archive %s: %s", task_id, exc)
        else:
            log.info("%s: one-off task archived to %s (%s)", task_id, target, reason)
            self.state.add_event(
                "daemon",
                "task.archived",
                task=task_id,
                detail={"path": str(target), "reason": reason},
            )
        self.tasks.pop(task_id, None)

    def submit(
        self,
        task_id: str,
        *,
        kind: str,
        trigger_id: str | None = None,
        payload: bytes | None = None,
    ) -> str | None:
        """Start a manual or webhook run through the same overlap and cap as scheduled ones."""
        sched = self.tasks.get(task_id)
        if sched is None:
            return None
        run_id = self.dispatch(sched, trigger_id, None, kind=kind, payload=payload)
        self.wake.set()
        return run_id

    def queue_depth(self, task_id: str) -> int:
        """Runs of a task waiting to start (overlap queue plus the global gate)."""
        sched = self.tasks.get(task_id)
        waiting = sum(1 for s, _ in self.pending.values() if s.task.id == task_id)
        return waiting + (len(sched.queued) if sched else 0)

    @staticmethod
    def _actor(kind: str) -> str:
        return {"manual": "cli", "webhook": "webhook"}.get(kind, "schedule")

    # -- views ------------------------------------------------------------------------

    def next_fire(self, task_id: str) -> datetime | None:
        sched = self.tasks.get(task_id)
        if sched is None or not sched.next_fire:
            return None
        return min(sched.next_fire.values(), key=lambda d: d.timestamp())

    def uptime(self) -> timedelta:
        return datetime.now(UTC) - self.started_at


def _parse_time(value: datetime | str | None) -> datetime | None:
    # State.get_trigger_state already returns datetimes; older callers passed text.
    if not value:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
