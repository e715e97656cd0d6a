"""The state database `<home>/state.db`: runs, events, trigger state, tokens (DESIGN.md §2, §5, §6).

SQLite in WAL mode, shared by the daemon and CLI processes. `State` is the one way in:
each of its methods is one short transaction. The SQL lives with what it is about, as
functions over a connection: `runs.py` (run rows), `ledger.py` (the audit ledger),
`taskstate.py` (trigger and task state), `webhooks.py` (tokens, deliveries),
`retention.py` (pruning). The row types and how times are stored are in `rows.py`, the
schema in `migrations.py`, opening the file in `database.py`. Every write goes through
`State._write`, which runs one such function in one write transaction; every read
through `State._read`.

Writes take the write lock up front (`BEGIN IMMEDIATE`) so two processes never deadlock
upgrading a read lock, and `busy_timeout` makes the other wait instead of failing.
docs/state-schema.md describes every table. Every method that records a time takes
`now` so tests control the clock; it defaults to the current time, resolved when the
method is called.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from daycare_cli.core.streak import DEFAULT_THRESHOLD, StreakChange
from daycare_cli.store import ledger, retention, runs, taskstate, webhooks
from daycare_cli.store.database import opening
from daycare_cli.store.ledger import Ledger
from daycare_cli.store.migrations import (
    MIGRATIONS,
    Migration,
    applied_history,
    apply_missing,
    up_to_date,
)
from daycare_cli.store.paths import pid_alive
from daycare_cli.store.rows import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Event,
    Run,
    TaskState,
    TriggerState,
    aware_now,
    slot_text,
    stamp,
)

T = TypeVar("T")


class State:
    """An open state database. Use `State.open(path)`; close it or use it as a context manager.

    Safe to share between threads of one process (calls are serialized) and between
    processes (SQLite locking, `BEGIN IMMEDIATE`, a 5 s busy timeout).
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = threading.RLock()

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, db_path: Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> State:
        """Open (creating if needed) the database at `db_path` and run missing migrations.

        The file is created 0600: it holds webhook tokens.
        """
        db_path = Path(db_path)
        with opening(db_path) as db:
            state = cls(db, db_path)
            state._migrate(migrations)
        return state

    def _migrate(self, steps: Sequence[Migration]) -> None:
        """Run the migrations not yet recorded, in order, in one write transaction."""
        if not self._read(lambda db: up_to_date(db, steps)):
            self._write(lambda db: apply_missing(db, steps))

    def migrations(self) -> list[tuple[str, datetime]]:
        """The applied migrations with when they ran, in order."""
        return self._read(applied_history)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the two ways to the database ---------------------------------------------------

    def _write(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """Run `transaction(db)` as one write transaction and return what it returns.

        Every write of the store takes this path. The write lock is taken at BEGIN, not
        at the first write; an exception rolls the whole transaction back.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = transaction(self._db)
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query(db)`, which only reads, and return what it returns."""
        with self._lock:
            return query(self._db)

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self,
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
    ) -> Run | None:
        """Write a run row before anything runs; None when the run already exists.

        A run with a slot is unique on (task, trigger_id, slot, attempt): a second fire of
        the same slot gets None, so a slot never fires twice. `pid` is the process that
        will run it (default: this one), which `mark_interrupted` checks. With
        `delivery_id` (a webhook's delivery id) the delivery is remembered in the same
        transaction and a repeated delivery gets None; `delivery_run` tells its run.
        `event` is written to the ledger, `run_dir(run_id)` recorded, and with
        `remember_slot` the trigger's `last_slot` set, all in the same transaction: the
        scheduler's whole bookkeeping for a fire is one commit.
        """
        slot_key = runs.check_new_run(trigger, trigger_id, slot, status, attempt)
        at = aware_now(now)
        if pid is None and status in ACTIVE_STATUSES:
            pid = os.getpid()
        return self._write(
            lambda db: runs.create_run(
                db,
                task,
                trigger,
                trigger_id,
                slot_key,
                status=status,
                attempt=attempt,
                now=at,
                pid=pid,
                delivery_id=delivery_id,
                event=event,
                run_dir=run_dir,
                remember_slot=remember_slot,
            )
        )

    def start_run(
        self,
        run_id: str,
        *,
        pid: int | None = None,
        now: datetime | None = None,
        event: Ledger | None = None,
        task: str | None = None,
        run_dir: str | Path | None = None,
    ) -> bool:
        """Mark a queued run running, by `pid` (default: this process).

        Returns False when the run was no longer queued (cancelled meanwhile, or started).
        """
        at = aware_now(now)
        owner = os.getpid() if pid is None else pid
        return self._write(
            lambda db: runs.start_run(
                db, run_id, pid=owner, now=at, event=event, task=task, run_dir=run_dir
            )
        )

    def finish_run(
        self,
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
        event: Ledger | None = None,
    ) -> Run:
        """Record how a run ended; fields left None keep what the row already has.

        `duration_ms` is the time from start to now (None if it never started). Output
        and response are kept up to 1 MiB each; the run directory has the full text.
        """
        if status not in FINISHED_STATUSES:
            raise ValueError(f"{status!r} is not a finished status: {', '.join(FINISHED_STATUSES)}")
        at = aware_now(now)
        return self._write(
            lambda db: runs.finish_run(
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
                event=event,
            )
        )

    def set_run_dir(self, run_id: str, run_dir: str | Path) -> None:
        """Record where the run's files are (prune returns it so the caller can delete it)."""
        self._write(lambda db: runs.set_run_dir(db, run_id, str(run_dir)))

    def get_run(self, ref: str) -> Run | None:
        """The run with this id or unique id prefix (like git); None when nothing matches.

        Raises UsageError when the prefix matches more than one run.
        """
        if not ref:
            return None
        return self._read(lambda db: runs.get_run(db, ref))

    def list_runs(
        self, task: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[Run]:
        """Runs, newest first, optionally of one task and/or one status."""
        return self._read(lambda db: runs.list_runs(db, task, status, limit))

    def latest_runs(self) -> dict[str, Run]:
        """The newest run of each task, by task id."""
        return self._read(runs.latest_runs)

    def running_runs(self, task: str | None = None, *, include_queued: bool = False) -> list[Run]:
        """Runs now running (and queued, if asked), oldest first."""
        return self._read(lambda db: runs.running_runs(db, task, include_queued))

    def mark_interrupted(
        self,
        pids_alive: Callable[[int], bool] | None = None,
        *,
        now: datetime | None = None,
    ) -> list[Run]:
        """Mark queued or running runs whose process is gone as `interrupted`; return them.

        Called when the daemon starts: runs a dead daemon or CLI left behind. A run
        without a pid has no owner to wait for. `pids_alive` tells whether a pid lives
        (default: signal 0). A pid reused by an unrelated process keeps its run active
        until that process ends; the caller logs events for the returned runs.
        """
        alive = pids_alive or pid_alive
        at = aware_now(now)
        return self._write(lambda db: runs.mark_interrupted(db, alive, at))

    def record_missed(
        self,
        task: str,
        trigger_id: str,
        slots: Iterable[datetime | str],
        *,
        now: datetime | None = None,
        reason: str = "the daemon was not running at this time",
    ) -> list[Run]:
        """Record slots that will not run as `missed` runs; slots already recorded are left.

        A missed row takes the slot's key, so the slot can never fire afterwards.
        """
        at = aware_now(now)
        texts = [slot_text(s) for s in slots]
        return self._write(
            lambda db: runs.record_missed(db, task, trigger_id, texts, now=at, reason=reason)
        )

    def prune(
        self,
        task: str,
        *,
        keep: int = 100,
        max_age_days: float = 30,
        now: datetime | None = None,
    ) -> list[str]:
        """Delete a task's finished runs beyond the newest `keep` or older than `max_age_days`.

        The last `succeeded` run and the last failed or timed-out run are always kept, as
        are queued and running ones. Deliveries older than the age limit go too. Returns
        the `run_dir` of every deleted run so the caller removes the directories.
        """
        if keep < 0 or max_age_days < 0:
            raise ValueError("keep and max_age_days must not be negative")
        cutoff = stamp(aware_now(now) - timedelta(days=max_age_days))
        # Most runs have nothing to prune: a read answers that without a write transaction.
        if not self._read(lambda db: retention.needs_pruning(db, task, keep, cutoff)):
            return []
        return self._write(lambda db: retention.prune(db, task, keep, cutoff))

    # -- events -------------------------------------------------------------------------

    def add_event(
        self,
        actor: str,
        kind: str,
        *,
        task: str | None = None,
        run: str | None = None,
        detail: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Append to the audit ledger; returns the event id. `detail` must hold no secrets."""
        at = aware_now(now)
        return self._write(
            lambda db: ledger.insert_event(db, (actor, kind, detail), task=task, run=run, now=at)
        )

    def list_events(
        self,
        task: str | None = None,
        limit: int | None = 100,
        since_id: int | None = None,
        *,
        run: str | None = None,
    ) -> list[Event]:
        """Events oldest first, like a log: the newest `limit`, or the first `limit` after
        `since_id` (to follow the ledger, pass the last id seen)."""
        return self._read(lambda db: ledger.list_events(db, task, limit, since_id, run))

    # -- trigger and task state -----------------------------------------------------------

    def get_trigger_state(self, task: str, trigger_id: str) -> TriggerState:
        """What is remembered about a trigger; a fresh state if nothing is."""
        return self._read(lambda db: taskstate.get_trigger_state(db, task, trigger_id))

    def trigger_states(self, task: str | None = None) -> list[TriggerState]:
        """Every remembered trigger state (of one task), for the daemon's start."""
        return self._read(lambda db: taskstate.trigger_states(db, task))

    def plan_from(self, rows: Iterable[tuple[str, str, datetime]]) -> None:
        """Record, in one commit, the instant each new trigger was first planned from.

        For a trigger that never fired, `last_slot` is that instant, so a daemon that is
        down when its first slot passes still sees the slot as missed at the next start.
        Triggers that already have a state keep it.
        """
        self._write(lambda db: taskstate.plan_from(db, rows))

    def set_trigger_state(
        self,
        task: str,
        trigger_id: str,
        *,
        last_slot: datetime | str | None = None,
        last_fire_at: datetime | None = None,
        failure_streak: int | None = None,
        flagged: bool | None = None,
    ) -> TriggerState:
        """Update a trigger's state; arguments left None keep their value. Returns the state."""
        return self._write(
            lambda db: taskstate.set_trigger_state(
                db,
                task,
                trigger_id,
                last_slot=last_slot,
                last_fire_at=last_fire_at,
                failure_streak=failure_streak,
                flagged=flagged,
            )
        )

    def get_task_state(self, task: str) -> TaskState:
        """A task's failure streak and last success and failure; a fresh state if none."""
        return self._read(lambda db: taskstate.get_task_state(db, task))

    def flagged_tasks(self) -> list[str]:
        """Tasks whose failure streak reached the threshold and has not recovered yet."""
        return self._read(taskstate.flagged_tasks)

    def last_isolation(self) -> dict[str, str]:
        """Per task, the isolation its latest run with blocks got (`task ls`)."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT task, isolation FROM runs WHERE isolation IS NOT NULL "
                "ORDER BY COALESCE(started_at, queued_at), rowid"
            ).fetchall()
        )
        return {str(r["task"]): str(r["isolation"]) for r in rows}  # the latest wins

    def record_outcome(
        self, task: str, status: str, run_id: str, *, threshold: int = DEFAULT_THRESHOLD
    ) -> StreakChange:
        """Move the task's failure streak (and its trigger's) by a finished run's status.

        The returned change says whether this run crossed the threshold (`failure-streak`,
        once per streak) or ended a flagged streak (`recovery`); see core/streak.py.
        """
        return self._write(lambda db: taskstate.record_outcome(db, task, status, run_id, threshold))

    # -- webhook tokens -----------------------------------------------------------------

    def issue_token(self, task: str, trigger_id: str, *, now: datetime | None = None) -> str:
        """The active token of a webhook trigger, made (192 random bits) if it has none."""
        at = aware_now(now)
        return self._write(lambda db: webhooks.issue_token(db, task, trigger_id, at))

    def rotate_token(self, task: str, trigger_id: str, *, now: datetime | None = None) -> str:
        """Revoke the trigger's active token (its URL stops working) and issue a new one."""
        at = aware_now(now)
        return self._write(lambda db: webhooks.rotate_token(db, task, trigger_id, at))

    def revoke_tokens(
        self, task: str, trigger_id: str | None = None, *, now: datetime | None = None
    ) -> int:
        """Revoke the active tokens of a task (or of one trigger); returns how many."""
        at = aware_now(now)
        return self._write(lambda db: webhooks.revoke_tokens(db, task, trigger_id, at))

    def lookup_token(self, token: str) -> tuple[str, str] | None:
        """The (task, trigger_id) an active token belongs to; None if unknown or revoked.

        Found through its SHA-256 (an index lookup that reveals nothing about the token
        through timing), then compared in constant time.
        """
        return self._read(lambda db: webhooks.lookup_token(db, token))

    # -- webhook deliveries -------------------------------------------------------------

    def remember_delivery(
        self, task: str, delivery_id: str, run_id: str, *, now: datetime | None = None
    ) -> str | None:
        """Remember that a delivery started `run_id`; if it was seen before, its run id.

        `create_run(..., delivery_id=...)` does this in the run's own transaction.
        """
        at = aware_now(now)
        return self._write(lambda db: webhooks.remember_delivery(db, task, delivery_id, run_id, at))

    def delivery_run(self, task: str, delivery_id: str) -> str | None:
        """The run id a remembered delivery started, or None."""
        return self._read(lambda db: webhooks.delivery_run(db, task, delivery_id))
