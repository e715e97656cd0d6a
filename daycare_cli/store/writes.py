"""Every write of the state database as a transaction value: `tx(db) -> result`.

A function here checks its arguments and resolves what the caller left open (the time,
the owning pid) when it is called, and returns a function of a connection that does the
write inside whatever transaction runs it. It does not touch the database itself. Two
things run these transactions:

- `State` (`state.py`), one write transaction per call, in the caller's thread: the CLI,
  a short-lived process;
- the daemon's writer thread (`writer.py`), which commits many of them at once (group
  commit), so the event loop never waits on the disk, and retries them when the disk
  fails.

The SQL itself lives with the tables (`runs.py`, `ledger.py`, `taskstate.py`,
`webhooks.py`, `retention.py`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from daycare_cli.core.streak import DEFAULT_THRESHOLD, StreakChange
from daycare_cli.store import ledger, retention, runs, taskstate, webhooks
from daycare_cli.store.ledger import Ledger
from daycare_cli.store.paths import pid_alive
from daycare_cli.store.rows import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Run,
    TriggerState,
    aware_now,
    slot_text,
    stamp,
)

T = TypeVar("T")
Transaction: TypeAlias = Callable[[sqlite3.Connection], T]


# --- runs ---------------------------------------------------------------------------------


def create_run(
    task: str,
    trigger: str,
    trigger_id: str | None = None,
    slot: datetime | str | None = None,
    *,
    status: str = "queued",
    attempt: int = 1,
    now: datetime | None = None,
    pid: int | None = None,
    delivery_id: str | None = None,
    event: Ledger | None = None,
    run_dir: Callable[[str], str | Path] | None = None,
    remember_slot: bool = False,
    run_id: str | None = None,
    payload: bytes | None = None,
    skip_reason: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Transaction[Run | None]:
    """Write a run row before anything runs; None when the run already exists.

    A run with a slot is unique on (task, trigger_id, slot, attempt): a second fire of
    the same slot gets None, so a slot never fires twice. `pid` is the process that
    will run it (default: this one), which the next daemon start checks. With
    `delivery_id` (a webhook's delivery id) the delivery is remembered in the same
    transaction and a repeated delivery gets None; `delivery_run` tells its run.
    `event` is written to the ledger, `run_dir(run_id)` recorded, and with
    `remember_slot` the trigger's `last_slot` moved on to this slot, all in the same
    transaction: the scheduler's whole bookkeeping for a fire is one commit. `run_id`
    is the id to use (the daemon draws it before the commit; see `runs.new_run_id`),
    `payload` a webhook body kept until the run starts, so a queued webhook run
    survives a restart. With `clock`, the row's time (`queued_at`) is read from it as
    the transaction runs: when the row is written (in the daemon's writer thread), not
    when it was handed over.
    """
    slot_key = runs.check_new_run(trigger, trigger_id, slot, status, attempt)
    at = aware_now(now)
    if pid is None and status in ACTIVE_STATUSES:
        pid = os.getpid()
    return lambda db: runs.create_run(
        db,
        task,
        trigger,
        trigger_id,
        slot_key,
        status=status,
        attempt=attempt,
        now=at if clock is None else aware_now(clock()),
        pid=pid,
        delivery_id=delivery_id,
        event=event,
        run_dir=run_dir,
        remember_slot=remember_slot,
        run_id=run_id,
        payload=payload,
        skip_reason=skip_reason,
    )


def start_run(
    run_id: str,
    *,
    pid: int | None = None,
    now: datetime | None = None,
    event: Ledger | None = None,
    task: str | None = None,
    run_dir: str | Path | None = None,
) -> Transaction[bool]:
    """Mark a queued run running, by `pid` (default: this process).

    Returns False when the run was no longer queued (cancelled meanwhile, or started).
    A webhook payload kept in the row is dropped: the run directory has it from now on.
    """
    at = aware_now(now)
    owner = os.getpid() if pid is None else pid
    return lambda db: runs.start_run(
        db, run_id, pid=owner, now=at, event=event, task=task, run_dir=run_dir
    )


def finish_run(
    run_id: str,
    *,
    status: str,
    now: datetime | None = None,
    error: str | None = None,
    skip_reason: str | None = None,
    output: str | None = None,
    response: str | None = None,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    isolation: str | None = None,
    block_started_at: datetime | None = None,
    event: Ledger | None = None,
    only_active: bool = False,
) -> Transaction[Run]:
    """Record how a run ended; fields left None keep what the row already has.

    `duration_ms` is the time from start to now (None if it never started). Output
    and response are kept up to 1 MiB each; the run directory has the full text. With
    `only_active`, a run that already ended is left as it is (a clean-up after a crash
    never overwrites the status the runner recorded).
    """
    if status not in FINISHED_STATUSES:
        raise ValueError(f"{status!r} is not a finished status: {', '.join(FINISHED_STATUSES)}")
    at = aware_now(now)
    return lambda db: runs.finish_run(
        db,
        run_id,
        status=status,
        now=at,
        error=error,
        skip_reason=skip_reason,
        output=output,
        response=response,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        isolation=isolation,
        block_started_at=block_started_at,
        event=event,
        only_active=only_active,
    )


@dataclass(frozen=True)
class RunEnd:
    """What ending a run wrote: the finished row, the streak change, the directories that
    retention freed (for the caller to delete)."""

    run: Run
    change: StreakChange
    doomed: list[str]


def end_run(
    run_id: str,
    *,
    status: str,
    actor: str,
    threshold: int = DEFAULT_THRESHOLD,
    keep: int,
    max_age_days: float,
    now: datetime | None = None,
    event: Ledger | None = None,
    **fields: Any,
) -> Transaction[RunEnd]:
    """A run's whole ending in one commit: `finish_run` (with `fields`), then
    `record_outcome` (a `task.flagged` event by `actor` when the streak reaches
    `threshold`), then `prune` of its task."""
    at = aware_now(now)
    finish = finish_run(run_id, status=status, now=at, event=event, **fields)
    cutoff = stamp(at - timedelta(days=max_age_days))

    def tx(db: sqlite3.Connection) -> RunEnd:
        run = finish(db)
        change = taskstate.record_outcome(db, run.task, run.status, run.id, threshold)
        if change.event == "failure-streak":
            flagged = (actor, "task.flagged", {"streak": threshold})
            ledger.insert_event(db, flagged, task=run.task, run=run.id, now=at)
        doomed: list[str] = []
        if retention.needs_pruning(db, run.task, keep, cutoff):
            doomed = retention.prune(db, run.task, keep, cutoff)
        return RunEnd(run, change, doomed)

    return tx


def set_run_dir(run_id: str, run_dir: str | Path) -> Transaction[None]:
    """Record where the run's files are (prune returns it so the caller can delete it)."""
    return lambda db: runs.set_run_dir(db, run_id, str(run_dir))


def plan_retry(run_id: str, at: datetime | None) -> Transaction[None]:
    """Record when the retry of failed run `run_id` is planned, or None when it is no
    longer owed (state-schema.md)."""
    return lambda db: runs.set_retry_at(db, run_id, at)


def mark_interrupted(
    pids_alive: Callable[[int], bool] | None = None, *, now: datetime | None = None
) -> Transaction[list[Run]]:
    """Mark queued or running runs whose process is gone as `interrupted`; return them.

    A run without a pid has no owner to wait for. `pids_alive` tells whether a pid
    lives (default: signal 0). A pid reused by an unrelated process keeps its run active
    until that process ends; the caller logs events for the returned runs.
    """
    alive = pids_alive or pid_alive
    at = aware_now(now)
    return lambda db: runs.mark_interrupted(db, alive, at)


def settle_stale(
    pids_alive: Callable[[int], bool],
    *,
    adopt: Callable[[Run], bool],
    pid: int | None = None,
    now: datetime | None = None,
) -> Transaction[tuple[list[Run], list[Run]]]:
    """At a daemon's start: settle the runs that processes now gone left active.

    A `running` run, and a `queued` one that `adopt` refuses, becomes `interrupted`. A
    `queued` run that `adopt` accepts (a durable webhook or catch-up run) stays queued,
    now owned by `pid` (default: this process), for this daemon to run once. Returns
    (interrupted, adopted), oldest first.
    """
    owner = os.getpid() if pid is None else pid
    at = aware_now(now)
    return lambda db: runs.settle_stale(db, pids_alive, adopt, owner, at)


def record_missed(
    task: str,
    trigger_id: str,
    slots: Iterable[datetime | str],
    *,
    now: datetime | None = None,
    reason: str = "the daemon was not running at this time",
) -> Transaction[list[Run]]:
    """Record slots that will not run as `missed` runs; slots already recorded are left.

    A missed row takes the slot's key, so the slot can never fire afterwards.
    """
    at = aware_now(now)
    texts = [slot_text(s) for s in slots]
    return lambda db: runs.record_missed(db, task, trigger_id, texts, now=at, reason=reason)


def record_catch_up(
    task: str,
    trigger_id: str,
    *,
    run: Sequence[tuple[datetime, str]],
    missed: Sequence[datetime],
    last_slot: datetime,
    dropped: int = 0,
    dropped_before: datetime | None = None,
    now: datetime | None = None,
    reason: str = "the daemon was not running at this time",
    pid: int | None = None,
) -> Transaction[list[Run]]:
    """A catch-up's whole bookkeeping in one commit, so no slot is ever lost in between.

    Each slot of `run` gets a `queued` catch-up run with the given id (a restarted daemon
    runs it), each of `missed` a `missed` row; `dropped` older slots (before
    `dropped_before`), not written one row each, are counted in a `catch_up.dropped`
    event; and the trigger's `last_slot` moves on to `last_slot`. Slots that already have
    a row keep it. Returns the queued runs created.
    """
    at = aware_now(now)
    owner = os.getpid() if pid is None else pid
    to_run = [(slot_text(s) or "", run_id) for s, run_id in run]
    to_miss = [slot_text(s) for s in missed]
    last = slot_text(last_slot) or ""

    def tx(db: sqlite3.Connection) -> list[Run]:
        if dropped:
            detail = {
                "trigger": trigger_id,
                "slots": dropped,
                "before": dropped_before.isoformat() if dropped_before else None,
            }
            ledger.insert_event(
                db, ("daemon", "catch_up.dropped", detail), task=task, run=None, now=at
            )
        runs.record_missed(db, task, trigger_id, to_miss, now=at, reason=reason)
        queued = runs.queue_catch_up(db, task, trigger_id, to_run, now=at, pid=owner)
        taskstate.remember_slot(db, task, trigger_id, last)
        return queued

    return tx


def prune(
    task: str, *, keep: int, max_age_days: float, now: datetime | None = None
) -> Transaction[list[str]]:
    """Delete a task's finished runs beyond the newest `keep` or older than `max_age_days`.

    The last `succeeded` run and the last failed or timed-out run are always kept, as
    are queued and running ones. Deliveries older than the age limit go too. Returns
    the `run_dir` of every deleted run so the caller removes the directories.
    """
    if keep < 0 or max_age_days < 0:
        raise ValueError("keep and max_age_days must not be negative")
    cutoff = stamp(aware_now(now) - timedelta(days=max_age_days))

    def tx(db: sqlite3.Connection) -> list[str]:
        if not retention.needs_pruning(db, task, keep, cutoff):
            return []
        return retention.prune(db, task, keep, cutoff)

    return tx


# --- events -------------------------------------------------------------------------------


def add_event(
    actor: str,
    kind: str,
    *,
    task: str | None = None,
    run: str | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Transaction[int]:
    """Append to the audit ledger; returns the event id. `detail` must hold no secrets."""
    at = aware_now(now)
    return lambda db: ledger.insert_event(db, (actor, kind, detail), task=task, run=run, now=at)


# --- trigger and task state -----------------------------------------------------------------


def plan_from(rows: Iterable[tuple[str, str, datetime]]) -> Transaction[None]:
    """Record, in one commit, the instant each new trigger was first planned from.

    For a trigger that never fired, `last_slot` is that instant, so a daemon that is
    down when its first slot passes still sees the slot as missed at the next start.
    Triggers that already have a state keep it.
    """
    planned = list(rows)
    return lambda db: taskstate.plan_from(db, planned)


def set_trigger_state(
    task: str,
    trigger_id: str,
    *,
    last_slot: datetime | str | None = None,
    last_fire_at: datetime | None = None,
    failure_streak: int | None = None,
    flagged: bool | None = None,
) -> Transaction[TriggerState]:
    """Update a trigger's state; arguments left None keep their value. Returns the state."""
    return lambda db: taskstate.set_trigger_state(
        db,
        task,
        trigger_id,
        last_slot=last_slot,
        last_fire_at=last_fire_at,
        failure_streak=failure_streak,
        flagged=flagged,
    )


def record_outcome(
    task: str, status: str, run_id: str, *, threshold: int = DEFAULT_THRESHOLD
) -> Transaction[StreakChange]:
    """Move the task's failure streak (and its trigger's) by a finished run's status.

    The returned change says whether this run crossed the threshold (`failure-streak`,
    once per streak) or ended a flagged streak (`recovery`); see core/streak.py.
    """
    return lambda db: taskstate.record_outcome(db, task, status, run_id, threshold)


# --- webhook tokens and deliveries ----------------------------------------------------------


def issue_token(task: str, trigger_id: str, *, now: datetime | None = None) -> Transaction[str]:
    """The active token of a webhook trigger, made (192 random bits) if it has none."""
    at = aware_now(now)
    return lambda db: webhooks.issue_token(db, task, trigger_id, at)


def rotate_token(task: str, trigger_id: str, *, now: datetime | None = None) -> Transaction[str]:
    """Revoke the trigger's active token (its URL stops working) and issue a new one."""
    at = aware_now(now)
    return lambda db: webhooks.rotate_token(db, task, trigger_id, at)


def revoke_tokens(
    task: str, trigger_id: str | None = None, *, now: datetime | None = None
) -> Transaction[int]:
    """Revoke the active tokens of a task (or of one trigger); returns how many."""
    at = aware_now(now)
    return lambda db: webhooks.revoke_tokens(db, task, trigger_id, at)


def remember_delivery(
    task: str, delivery_id: str, run_id: str, *, now: datetime | None = None
) -> Transaction[str | None]:
    """Remember that a delivery started `run_id`; if it was seen before, its run id.

    `create_run(..., delivery_id=...)` does this in the run's own transaction.
    """
    at = aware_now(now)
    return lambda db: webhooks.remember_delivery(db, task, delivery_id, run_id, at)
