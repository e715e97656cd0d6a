"""The plan: every valid task the daemon holds and a heap of the fires coming due.

Loading and re-reading task files, the next fire of each trigger, and catch-up of slots
that passed unrun live here; running fires is the scheduler's job (`scheduler.py`). Every
change to the plan sets the scheduler's `wake` event, so its loop recomputes the sleep
(STYLE.md, "one loop, one wakeup").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from daycare_cli.config import Config
from daycare_cli.core.errors import TaskFileError
from daycare_cli.core.policy import apply_jitter, default_catch_up_window, plan_catch_up
from daycare_cli.core.schedule import at_instant, next_fires, slots_between, upcoming
from daycare_cli.core.task import (
    AtTrigger,
    CronTrigger,
    EveryTrigger,
    Task,
    Trigger,
    WebhookTrigger,
    effective_zone,
)
from daycare_cli.core.taskhead import TaskHead
from daycare_cli.daemon.clock import Clock
from daycare_cli.daemon.faults import fault_point
from daycare_cli.daemon.planned import Fire, PlanningFailed, Scheduled
from daycare_cli.daemon.queued import rows_of
from daycare_cli.store import writes
from daycare_cli.store.paths import Paths
from daycare_cli.store.plancache import PlanCache
from daycare_cli.store.rows import Run
from daycare_cli.store.runs import new_run_id
from daycare_cli.store.state import State
from daycare_cli.store.tasks import TaskEntry, TaskStore
from daycare_cli.store.taskstate import slot_key
from daycare_cli.store.writing import InlineWriter, StateWriter

log = logging.getLogger("daycare.daemon")

CATCH_UP_LIMIT = 100
CATCH_UP_SCAN = 1000  # newest missed slots looked at after a long sleep


class Plan:
    """Every valid task's triggers, and their next fires in a heap ordered by start time.

    `state` is read from (trigger state); writes go through `writer`.
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        state: State,
        *,
        clock: Clock,
        wake: asyncio.Event,
        writer: StateWriter | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.state = state
        self.writer: StateWriter = writer or InlineWriter(state)
        self.clock = clock
        self.wake = wake
        self.store = TaskStore(paths)
        self.tasks: dict[str, Scheduled] = {}
        self.broken: dict[str, TaskFileError] = {}  # files with no good version at all
        self.heap: list[Fire] = []
        self.seq = itertools.count()
        self.started_at = clock.now()
        self.planned: list[tuple[str, str, datetime]] = []  # new triggers, see flush_planned
        self.webhook_tasks: set[str] = set()  # tasks with a webhook trigger
        self.webhooks_changed = asyncio.Event()  # set when that set changes
        # Every trigger's stored last slot, read in one query while a start loads the plan.
        self.stored: dict[str, str] | None = None
        # Each trigger's next slot as the last start computed it (store/plancache.py).
        self.plan_cache: PlanCache | None = None

    # -- loading ----------------------------------------------------------------------

    def zone(self, task: Task | TaskHead, trigger: Trigger | None = None) -> str:
        """The zone a trigger is evaluated in: its own, the task's, else config/system."""
        return effective_zone(task, trigger, self.config.timezone)

    def load_all(
        self, *, starting: bool, actor: str = "daemon", entries: list[TaskEntry] | None = None
    ) -> None:
        """(Re)read every task file; on start, also catch up and fire `@reboot` triggers.

        `entries`: the files already read (off the loop, by the watcher); else read here.
        Raises PlanningFailed after loading every other task when some could not be planned.
        """
        seen: set[str] = set()
        failed: list[tuple[str, Exception]] = []
        if starting:
            # Nothing else writes trigger state while a start loads: one query, not one
            # per trigger (10,000 at 15 µs each).
            self.stored = self.state.last_slots()  # as text: parsed when asked
            if entries is None:
                self.plan_cache = PlanCache(self.paths.home, self.paths.tasks_dir)
                self.plan_cache.load()
        try:
            listed = (
                self.store.list(defer_save=starting, packed=True)
                if entries is None
                else list(entries)
            )
            # Taken from the end, in id order: each entry is freed once applied, and what
            # the plan makes of the next one reuses its memory (10,000 entries held to the
            # end left ~1 MB more of the heap in use at a start's ready line).
            listed.reverse()
            while listed:
                entry = listed.pop()
                seen.add(entry.id)
                try:
                    self.apply_entry(entry, starting=starting, actor=actor)
                except Exception as exc:  # one task's planning must not keep the rest unloaded
                    failed.append((entry.id, exc))
        finally:
            self.stored = None
            if self.plan_cache is not None:
                self.plan_cache.save()
                self.plan_cache = None
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
            self.writer.post(writes.plan_from(self.planned), "where new triggers start from")
            self.planned = []

    def apply_entry(self, entry: TaskEntry, *, starting: bool = False, actor: str = "file") -> None:
        """Schedule a new or changed task file; an invalid edit keeps the old version."""
        fault_point("plan")
        current = self.tasks.get(entry.id)
        if entry.task is None and entry.head is None:
            assert entry.error is not None
            if current is not None:
                if current.error is None or str(current.error) != str(entry.error):
                    current.error = entry.error
                    log.warning(
                        "invalid edit of %s, keeping the last good version: %s",
                        entry.id,
                        entry.error,
                    )
                    self._event(actor, "task.invalid", entry.id, {"error": str(entry.error)})
            elif str(self.broken.get(entry.id)) != str(entry.error):
                self.broken[entry.id] = entry.error
                log.warning("task file %s is invalid: %s", entry.id, entry.error)
                self._event(actor, "task.invalid", entry.id, {"error": str(entry.error)})
            return
        self.broken.pop(entry.id, None)
        if current is not None and current.digest == entry.digest:
            current.error = None
            return
        generation = (current.generation + 1) if current else 1
        head = entry.head
        if head is None:
            assert entry.task is not None
            head = TaskHead.of(entry.task)
        sched = Scheduled(head, entry.digest, generation)
        if current is not None:
            sched.active, sched.queued = current.own_runs()
        self.tasks[entry.id] = sched
        self.track_webhooks(entry.id, sched.task)
        if not starting:
            # Loading at start is not a change: one `daemon.started` event covers it, and
            # 10,000 one-row transactions would cost a second of start-up.
            kind = "task.changed" if current else "task.added"
            log.info("%s %s", kind.split(".")[1], entry.id)
            self._event(actor, kind, entry.id, {"generation": generation})
        self.plan_task(sched, catch_up=starting or current is None, starting=starting)
        if not starting:
            self.flush_planned()  # a load flushes once at its end
        self.wake.set()

    def remove(self, task_id: str, *, actor: str = "file") -> None:
        """Unschedule a task whose file is gone; its history and running runs stay."""
        self.broken.pop(task_id, None)
        self.track_webhooks(task_id, None)
        if self.tasks.pop(task_id, None) is not None:
            log.info("removed %s", task_id)
            self._event(actor, "task.removed", task_id, None)
            self.wake.set()

    def archive(self, task_id: str, *, reason: str) -> None:
        """Move a spent one-off task's file to `.archive/` and unschedule it."""
        try:
            target = self.store.archive(task_id)
        except Exception as exc:  # the file may already be gone
            log.warning("could not archive %s: %s", task_id, exc)
        else:
            log.info("%s: one-off task archived to %s (%s)", task_id, target, reason)
            self._event("daemon", "task.archived", task_id, {"path": str(target), "reason": reason})
        self.tasks.pop(task_id, None)
        self.track_webhooks(task_id, None)

    def track_webhooks(self, task_id: str, task: TaskHead | None) -> None:
        """Keep `webhook_tasks` current (the webhook listener runs only while it has one)."""
        has = task is not None and any(isinstance(t, WebhookTrigger) for t in task.triggers)
        if has != (task_id in self.webhook_tasks):
            if has:
                self.webhook_tasks.add(task_id)
            else:
                self.webhook_tasks.discard(task_id)
            self.webhooks_changed.set()

    def _event(self, actor: str, kind: str, task_id: str, detail: dict[str, Any] | None) -> None:
        self.writer.post(
            writes.add_event(actor, kind, task=task_id, detail=detail), f"a {kind} event"
        )

    # -- the heap ---------------------------------------------------------------------

    def push(self, fire: Fire) -> None:
        heapq.heappush(self.heap, fire)

    def add_fire(
        self,
        start: datetime,
        sched: Scheduled,
        trigger_id: str,
        slot: datetime,
        kind: str = "schedule",
        *,
        attempt: int = 1,
        generation: int | None = None,
        run_id: str | None = None,
        row: asyncio.Future[Run | None] | None = None,
    ) -> None:
        """Plan a fire of `sched`'s trigger at `start` for `slot` (in the task's generation)."""
        gen = sched.generation if generation is None else generation
        self.push(
            Fire(
                start.timestamp(),
                next(self.seq),
                sched.task.id,
                trigger_id,
                slot,
                kind,
                attempt=attempt,
                generation=gen,
                run_id=run_id,
                row=row,
            )
        )

    def pop_due(self, now: float) -> Fire | None:
        """The earliest fire due by `now` (epoch seconds), taken off the heap; else None."""
        if self.heap and self.heap[0].at <= now:
            return heapq.heappop(self.heap)
        return None

    def next_at(self) -> float | None:
        """When the earliest planned fire starts (epoch seconds); None with nothing planned."""
        return self.heap[0].at if self.heap else None

    # -- planning ---------------------------------------------------------------------

    def replan_unplanned(self, now: datetime) -> list[str]:
        """Plan afresh every enabled task with a time trigger that has no current fire in
        the heap (its slots since the last fire go to catch-up); returns their ids."""
        planned = {
            (f.task_id, f.trigger_id)
            for f in self.heap
            if (s := self.tasks.get(f.task_id)) is not None and f.generation == s.generation
        }
        lost = []
        for sched in list(self.tasks.values()):
            task = sched.task
            if not task.enabled:
                continue
            for trigger in task.triggers:
                timed = isinstance(trigger, EveryTrigger) or (
                    isinstance(trigger, CronTrigger) and not trigger.reboot
                )
                if isinstance(trigger, AtTrigger):
                    at = at_instant(trigger, self.zone(task, trigger))
                    timed = at.timestamp() > now.timestamp()
                if timed and (task.id, trigger.id) not in planned:
                    lost.append(task.id)
                    break
        for task_id in lost:
            sched = self.tasks[task_id]
            sched.generation += 1  # fires planned before are void
            self.plan_task(sched, catch_up=True, starting=False)
        self.flush_planned()
        return lost

    def replan_all(self) -> None:
        """Plan every task afresh, without catch-up (the default zone changed)."""
        for sched in list(self.tasks.values()):
            sched.generation += 1
            self.plan_task(sched, catch_up=False, starting=False)
        self.flush_planned()

    def plan_task(self, sched: Scheduled, *, catch_up: bool, starting: bool) -> None:
        """Push the next fire of every trigger; with `catch_up`, first handle missed slots."""
        task = sched.task
        sched.next_fire.clear()
        if not task.enabled:
            return
        now = self.clock.now()
        for trigger in task.triggers:
            if isinstance(trigger, CronTrigger) and trigger.reboot:
                if starting:
                    self.add_fire(now, sched, trigger.id, now)
                continue
            if not isinstance(trigger, CronTrigger | AtTrigger | EveryTrigger):
                continue
            tz = self.zone(task, trigger)
            last = self.last_slot(task.id, trigger.id)
            first = now
            if isinstance(trigger, EveryTrigger):
                # Planned from the daemon's start (one instant for all, so simultaneous
                # intervals fire in one wake-up), or from now for a task added later.
                first = self.started_at if starting else now
            known: list[datetime] | None = None  # the next slot, when catch-up found it
            if catch_up:
                missed: list[datetime] = []
                dropped: tuple[int, datetime | None] = (0, None)
                if isinstance(trigger, AtTrigger):
                    at = at_instant(trigger, tz)
                    if at.timestamp() <= now.timestamp() and (
                        last is None or last.timestamp() < at.timestamp()
                    ):
                        missed = [at]
                elif last is not None:
                    if self.plan_cache is not None:  # the slot the last start stored
                        after = self.plan_cache.first_after(
                            task.id, sched.digest, trigger, tz, last
                        )
                    else:
                        after = next_fires(trigger, last, tz=tz, anchor=last)
                    if after and after[0].timestamp() <= now.timestamp():
                        missed, dropped = self.missed_since(sched, trigger, last, now)
                    elif last.timestamp() <= now.timestamp():
                        # Nothing missed (the common case at a restart): the slot after the
                        # last is also the first after now, what upcoming() would give.
                        known = after
                if missed:
                    self.catch_up(sched, trigger, missed, now, dropped=dropped)
            if last is None:
                self.planned.append((task.id, trigger.id, first))
            # The one answer to "when next" (docs/task-file.md, "schedule"), from the state just
            # read or about to be recorded: what the CLI computes from state.db.
            if known is None:
                known = [f.at for f in upcoming(trigger, now=now, last_slot=last or first, tz=tz)]
                if last is None and known and self.plan_cache is not None:
                    self.plan_cache.keep_first(
                        task.id, sched.digest, trigger, tz, first, now, known[0]
                    )
            if known:
                self.schedule_fire(sched, trigger, known[0])

    def last_slot(self, task_id: str, trigger_id: str) -> datetime | None:
        """A trigger's stored last slot (or where it was first planned from); None if none."""
        if self.stored is not None:
            return _parse_time(self.stored.get(slot_key(task_id, trigger_id)))
        tstate = self.state.get_trigger_state(task_id, trigger_id)
        return _parse_time(tstate.last_slot) if tstate else None

    def schedule_fire(
        self, sched: Scheduled, trigger: Trigger, slot: datetime, kind: str = "schedule"
    ) -> None:
        """Plan the fire of `slot`, shifted by the task's jitter; it is the trigger's next."""
        start = (
            apply_jitter(slot, sched.task.jitter, random.random()) if sched.task.jitter else slot
        )
        sched.next_fire[trigger.id] = slot
        self.add_fire(start, sched, trigger.id, slot, kind)

    def window(self, task: TaskHead, trigger: Trigger, now: datetime) -> float:
        """Seconds of missed time that catch-up considers (task setting or one period)."""
        tz = self.zone(task, trigger)
        return task.catch_up_window or default_catch_up_window(trigger, tz=tz, now=now)

    def missed_since(
        self, sched: Scheduled, trigger: Trigger, last: datetime, now: datetime
    ) -> tuple[list[datetime], tuple[int, datetime | None]]:
        """Slots after `last` up to now, newest CATCH_UP_SCAN at most, within the window;
        and (how many, before when) older slots there were.

        Older slots (a week of `every: 1s` after a long sleep) are only counted, in a
        `catch_up.dropped` event written with the catch-up, not recorded one row each.
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
        return slots[-CATCH_UP_SCAN:], (len(older), start if older else None)

    def catch_up(
        self,
        sched: Scheduled,
        trigger: Trigger,
        missed: list[datetime],
        now: datetime,
        *,
        dropped: tuple[int, datetime | None] = (0, None),
    ) -> None:
        """Apply the task's `catch_up` policy to slots that passed while nothing ran.

        One transaction writes the outcome of every slot, then moves the trigger's last
        slot past them: a `queued` catch-up run for each slot to run (a daemon killed
        before it runs them runs them at its next start), a `missed` row for each other
        slot, and the count of `dropped` older slots. A slot is never left without one.
        """
        task = sched.task
        window = self.window(task, trigger, now)
        plan = plan_catch_up(
            task.catch_up, missed[-CATCH_UP_LIMIT:], now=now, window=window, limit=CATCH_UP_LIMIT
        )
        overflow = missed[:-CATCH_UP_LIMIT] if len(missed) > CATCH_UP_LIMIT else []
        skipped = overflow + plan.missed
        to_run = [(slot, new_run_id(now), start_at) for slot, start_at in plan.run]
        latest = max(missed, key=lambda d: d.timestamp())
        created = self.writer.submit(
            writes.record_catch_up(
                task.id,
                trigger.id,
                run=[(slot, run_id) for slot, run_id, _ in to_run],
                missed=skipped,
                last_slot=latest,
                dropped=dropped[0],
                dropped_before=dropped[1],
                now=now,
            )
        )
        if skipped or dropped[0]:
            log.info(
                "%s/%s: %d missed slot(s) recorded, %d older ones counted (catch_up: %s)",
                task.id,
                trigger.id,
                len(skipped),
                dropped[0],
                task.catch_up,
            )
        rows = rows_of(created, [run_id for _, run_id, _ in to_run])
        for (slot, run_id, start_at), row in zip(to_run, rows, strict=True):
            self.add_fire(start_at, sched, trigger.id, slot, "catch-up", run_id=run_id, row=row)
        if not plan.run and self.spent(task, now):
            # A one-off whose only time passed unrun: recorded missed, nothing left to fire.
            self.archive(task.id, reason="missed")

    def spent(self, task: TaskHead, now: datetime) -> bool:
        """True for a task whose every trigger is an `at` time that has passed."""
        return bool(task.triggers) and all(
            isinstance(t, AtTrigger)
            and at_instant(t, self.zone(task, t)).timestamp() <= now.timestamp()
            for t in task.triggers
        )

    # -- views ------------------------------------------------------------------------

    def next_fire(self, task_id: str) -> datetime | None:
        """The earliest next slot of a task's triggers; None when nothing is planned."""
        sched = self.tasks.get(task_id)
        pairs = sched.next_fire.pairs() if sched is not None else ()
        if not pairs:
            return None
        return min((slot for _, slot in pairs), key=lambda d: d.timestamp())

    def next_slots(self, sched: Scheduled, now: datetime) -> dict[str, datetime]:
        """Each trigger's next slot as every view shows it (never a jittered start).

        The planned slot, or, once that slot has passed while its fire is still to start
        (jitter, a busy loop), the slot after it: what `upcoming()` gives the CLI at `now`
        from state.db, where the passed slot is not recorded yet.
        """
        slots: dict[str, datetime] = {}
        for trigger_id, slot in sched.next_fire.pairs():
            trigger = sched.task.trigger(trigger_id)
            if slot.timestamp() > now.timestamp() or trigger is None:
                slots[trigger_id] = slot
                continue
            tz = self.zone(sched.task, trigger)
            later = upcoming(trigger, now=now, last_slot=slot, tz=tz)
            if later:
                slots[trigger_id] = later[0].at
        return slots


def _parse_time(value: datetime | str | None) -> datetime | None:
    # State.get_trigger_state already returns datetimes; older callers passed text.
    if not value:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
