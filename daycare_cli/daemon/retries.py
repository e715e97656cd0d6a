"""Retries of failed runs: the retry a failed run of a slot gets (never past the
trigger's next slot), and those a daemon planned and did not run before it stopped (or
was killed), planned again at the next start (docs/operations.md, "Retries").

A planned retry is recorded on the failed run (`runs.retry_at`); `State.planned_retries`
gives those whose run (attempt + 1 of the same slot) is not written yet.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime

from daycare_cli.core.policy import plan_retry, restored_retry
from daycare_cli.core.schedule import upcoming
from daycare_cli.daemon.plan import Plan
from daycare_cli.daemon.planned import Scheduled
from daycare_cli.run.runner import RunRequest
from daycare_cli.store import writes
from daycare_cli.store.runs import PlannedRetry

log = logging.getLogger("daycare.daemon")


def retry_failed(plan: Plan, sched: Scheduled, req: RunRequest, now: datetime) -> bool:
    """Plan the retry of `req`, a failed run of a slot, if the task has one left and its
    time comes before the trigger's next slot; recorded on the run. True when planned."""
    assert req.slot is not None
    task = sched.task
    trigger = task.trigger(req.trigger_id or "")
    next_slot = sched.next_fire.get(req.trigger_id or "")
    at = plan_retry(
        req.attempt,
        task.retries,
        task.retry_delay,
        now=now,
        next_slot=next_slot,
        rand=random.random(),
    )
    if at is None or trigger is None:
        return False
    current = plan.tasks.get(task.id)
    gen = current.generation if current else sched.generation
    plan.add_fire(
        at,
        sched,
        trigger.id,
        req.slot,
        "retry",
        attempt=req.attempt + 1,
        generation=gen,
    )
    log.info("%s: retry %d at %s", task.id, req.attempt + 1, at.isoformat())
    if req.run_id is not None:
        # Durable: a daemon stopped or killed before the retry plans it again.
        plan.writer.post(writes.plan_retry(req.run_id, at), f"the retry of run {req.run_id}")
    return True


def restore_retries(plan: Plan, planned: list[PlannedRetry], now: datetime) -> int:
    """Put each owed retry on the plan: at its time, or now if it passed, unless the slot
    after the failed one has come (it runs instead) or the task is disabled, deleted or
    lost the trigger (as for a retry the daemon holds); those are no longer owed. Returns
    how many were planned."""
    restored = 0
    for run_id, task_id, trigger_id, slot, attempt, at in planned:
        sched = plan.tasks.get(task_id)
        trigger = sched.task.trigger(trigger_id) if sched is not None else None
        start = None
        if sched is not None and trigger is not None and sched.task.enabled:
            tz = plan.zone(sched.task, trigger)
            after = upcoming(trigger, now=slot, last_slot=slot, tz=tz)
            start = restored_retry(at, now=now, next_slot=after[0].at if after else None)
        if start is None:
            plan.writer.post(writes.plan_retry(run_id, None), f"the retry of run {run_id}")
            continue
        assert sched is not None and trigger is not None
        plan.add_fire(
            start,
            sched,
            trigger.id,
            slot,
            "retry",
            attempt=attempt + 1,
            generation=sched.generation,
        )
        restored += 1
    return restored
