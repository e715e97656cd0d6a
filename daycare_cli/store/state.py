"""The state database `<home>/state.db`: runs, events, trigger state, tokens (docs/state-schema.md).

SQLite in WAL mode, shared by the daemon and CLI processes. `State` is the one way in:
each of its methods is one short transaction. The SQL lives with what it is about, as
functions over a connection: `runs.py` (run rows), `ledger.py` (the audit ledger),
`taskstate.py` (trigger and task state), `webhooks.py` (tokens, deliveries),
`retention.py` (pruning). The row types and how times are stored are in `rows.py`, the
schema in `migrations.py`, opening the file in `database.py`. Every write is a
transaction built by `writes.py` and goes through `State._write`, which runs it as one
write transaction in the caller's thread; every read goes through `State._read`. The
daemon reads through a `State` too, but commits the same transactions on its writer
thread (`writer.py`), so its event loop never waits on the disk.

Writes take the write lock up front (`BEGIN IMMEDIATE`) so two processes never deadlock
upgrading a read lock, and `busy_timeout` makes the other wait instead of failing.
docs/state-schema.md describes every table. Every method that records a time takes
`now` so tests control the clock; it defaults to the current time, resolved when the
method is called.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

from daycare_cli.store import ledger, retention, runs, taskstate, webhooks, writes
from daycare_cli.store.database import opening
from daycare_cli.store.migrations import (
    MIGRATIONS,
    Migration,
    applied_history,
    apply_missing,
    up_to_date,
)
from daycare_cli.store.rows import Event, Run, TaskState, TriggerState, aware_now, stamp
from daycare_cli.store.writes import Transaction

T = TypeVar("T")
P = ParamSpec("P")


def _committed(build: Callable[P, Transaction[T]]) -> Callable[Concatenate[State, P], T]:
    """A `State` method that builds a transaction with `build` and commits it at once."""

    @functools.wraps(build)
    def method(self: State, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._write(build(*args, **kwargs))

    return method


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

    def _write(self, transaction: Transaction[T]) -> T:
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
    # Each write is a transaction built by `writes.py` and committed here, at once, in
    # the caller's thread; the daemon commits the same transactions on its writer thread.

    create_run = _committed(writes.create_run)
    start_run = _committed(writes.start_run)
    finish_run = _committed(writes.finish_run)
    set_run_dir = _committed(writes.set_run_dir)
    plan_retry = _committed(writes.plan_retry)
    mark_interrupted = _committed(writes.mark_interrupted)
    settle_stale = _committed(writes.settle_stale)
    record_missed = _committed(writes.record_missed)
    record_catch_up = _committed(writes.record_catch_up)

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

    def prune(
        self,
        task: str,
        *,
        keep: int,
        max_age_days: float,
        now: datetime | None = None,
    ) -> list[str]:
        """Delete a task's finished runs beyond the newest `keep` or older than `max_age_days`
        (the caller passes the config's `retention.*`).

        The last `succeeded` run and the last failed or timed-out run are always kept, as
        are queued and running ones and a failure whose retry is still owed. Deliveries
        older than the age limit go too. Returns the `run_dir` of every deleted run so the
        caller removes the directories.
        """
        transaction = writes.prune(task, keep=keep, max_age_days=max_age_days, now=now)
        cutoff = stamp(aware_now(now) - timedelta(days=max_age_days))
        # Most runs have nothing to prune: a read answers that without a write transaction.
        if not self._read(lambda db: retention.needs_pruning(db, task, keep, cutoff)):
            return []
        return self._write(transaction)

    # -- events -------------------------------------------------------------------------

    add_event = _committed(writes.add_event)

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

    def last_slots(self) -> dict[str, str]:
        """Every trigger's stored last slot as text, by `taskstate.slot_key`: a start's read."""
        return self._read(taskstate.last_slots)

    plan_from = _committed(writes.plan_from)
    set_trigger_state = _committed(writes.set_trigger_state)

    def get_task_state(self, task: str) -> TaskState:
        """A task's failure streak and last success and failure; a fresh state if none."""
        return self._read(lambda db: taskstate.get_task_state(db, task))

    def flagged_tasks(self) -> list[str]:
        """Tasks whose failure streak reached the threshold and has not recovered yet."""
        return self._read(taskstate.flagged_tasks)

    def last_isolation(self) -> dict[str, str]:
        """Per task, the isolation its latest run with blocks got (`task ls`)."""
        return self._read(runs.last_isolation)

    record_outcome = _committed(writes.record_outcome)

    def planned_retries(self) -> list[runs.PlannedRetry]:
        """Retries planned by a daemon that stopped before they ran: (failed run id, task,
        trigger_id, slot, attempt of the failed run, when the retry was planned)."""
        return self._read(runs.planned_retries)

    # -- webhook tokens -----------------------------------------------------------------

    issue_token = _committed(writes.issue_token)
    rotate_token = _committed(writes.rotate_token)
    revoke_tokens = _committed(writes.revoke_tokens)

    def lookup_token(self, token: str) -> tuple[str, str] | None:
        """The (task, trigger_id) an active token belongs to; None if unknown or revoked.

        Found through its SHA-256 (an index lookup that reveals nothing about the token
        through timing), then compared in constant time.
        """
        return self._read(lambda db: webhooks.lookup_token(db, token))

    # -- webhook deliveries -------------------------------------------------------------

    remember_delivery = _committed(writes.remember_delivery)

    def delivery_run(self, task: str, delivery_id: str) -> str | None:
        """The run id a remembered delivery started, or None."""
        return self._read(lambda db: webhooks.delivery_run(db, task, delivery_id))
