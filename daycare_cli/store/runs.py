"""Run rows (`runs`): write one before anything runs, start it, finish it, read them back.

Functions over a connection: a write runs inside the caller's transaction (see
`State._write`), so a run, its ledger event, its delivery and its trigger's last slot
share one commit. Arguments arrive checked and with their times resolved (`State` does
that before the transaction).
"""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daycare_cli.core.errors import NotFoundError, UsageError
from daycare_cli.store import taskstate, webhooks
from daycare_cli.store.ledger import Ledger, insert_event
from daycare_cli.store.rows import (
    ACTIVE_STATUSES,
    STATUSES,
    TRIGGERS,
    Run,
    aware_now,
    duration_ms,
    parse_time,
    select,
    slot_text,
    stamp,
)

TEXT_CAP = 1024 * 1024  # output/response kept in the row; the full text is in the run dir
CUT_MARKER = "\n[… cut at 1 MiB; the full text is in the run directory]"


class _Suffixes:
    """The 8 random hex digits after the second, never drawn twice in one second by one
    process.

    So the daemon can draw a run's id before its row is committed, and retention can
    never free an id that is then drawn again (16 random bits were too few: over 100
    runs of a task in one second, a webhook burst, let that happen). Two processes draw
    independently; the CLI's insert checks the table, the daemon's ids are its own.

    The bits come from a generator seeded from the OS once per process (and again in a
    forked child): an id must be unique, not secret, and a read of /dev/urandom per id
    was a system call on the event loop's thread for every webhook request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._second = ""
        self._used: set[int] = set()
        self._random = random.Random()
        self.reseed()

    def reseed(self) -> None:
        """A fresh seed from the OS (at start, and in a forked child)."""
        self._random.seed(secrets.randbits(128))

    def draw(self, second: str) -> int:
        with self._lock:
            if second != self._second:
                self._second, self._used = second, set()
            while (value := self._random.getrandbits(32)) in self._used:
                pass
            self._used.add(value)
            return value


_SUFFIXES = _Suffixes()
os.register_at_fork(after_in_child=_SUFFIXES.reseed)


def new_run_id(now: datetime) -> str:
    """A run id that sorts by time: `20261122T090000Z-7f3a9c01` (UTC second, 32 random bits).

    One process never draws an id twice; see `_Suffixes`.
    """
    second = f"{aware_now(now).astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"{second}-{_SUFFIXES.draw(second):08x}"


def cap_text(text: str | None, limit: int = TEXT_CAP) -> str | None:
    """Text cut to `limit` UTF-8 bytes (on a character boundary) with a marker."""
    if text is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + CUT_MARKER


def check_new_run(
    trigger: str, trigger_id: str | None, slot: datetime | str | None, status: str, attempt: int
) -> str | None:
    """Refuse a run row that must not be written (ValueError); returns its slot as stored."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}; expected one of {', '.join(TRIGGERS)}")
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    text = slot_text(slot)
    if text is not None and trigger_id is None:
        # NULLs are distinct in a unique index: the slot key needs the trigger id.
        raise ValueError("a run with a slot needs its trigger_id")
    return text


def _select(db: sqlite3.Connection, run_id: str) -> Run:
    return Run.from_row(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())


# --- writes (inside the caller's transaction) ----------------------------------------------


def insert_run(
    db: sqlite3.Connection,
    task: str,
    trigger: str,
    trigger_id: str | None,
    slot: str | None,
    *,
    status: str,
    attempt: int,
    now: datetime,
    pid: int | None,
    skip_reason: str | None = None,
    run_id: str | None = None,
    payload: bytes | None = None,
    run_dir: Callable[[str], str | Path] | None = None,
) -> Run | None:
    """Insert a run row; None when its slot exists.

    `run_id` is used as given (the daemon draws ids ahead; one process never repeats
    one); otherwise an id is drawn here. `run_dir(run_id)` is where its files go.
    """
    if slot is not None:
        taken = db.execute(
            "SELECT 1 FROM runs WHERE task = ? AND trigger_id = ? AND slot = ? AND attempt = ?",
            (task, trigger_id, slot, attempt),
        ).fetchone()
        if taken:
            return None
    while run_id is None:  # another process may have drawn the same id this second
        run_id = new_run_id(now)
        if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            run_id = None
    at = stamp(now)
    directory = None if run_dir is None else str(run_dir(run_id))
    started = at if status == "running" else None
    finished = None if status in ACTIVE_STATUSES else at
    db.execute(
        """INSERT INTO runs (id, task, trigger, trigger_id, slot, attempt, status,
               queued_at, started_at, finished_at, skip_reason, pid, payload, run_dir)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            run_id,
            task,
            trigger,
            trigger_id,
            slot,
            attempt,
            status,
            at,
            started,
            finished,
            skip_reason,
            pid,
            payload,
            directory,
        ),
    )
    # The row as it now reads, without reading it back (a webhook burst writes thousands).
    queued_at = datetime.fromisoformat(at)
    return Run(
        id=run_id,
        task=task,
        trigger=trigger,
        trigger_id=trigger_id,
        slot=parse_time(slot),
        attempt=attempt,
        status=status,
        queued_at=queued_at,
        started_at=queued_at if started else None,
        finished_at=queued_at if finished else None,
        duration_ms=None,
        skip_reason=skip_reason,
        error=None,
        model=None,
        input_tokens=None,
        output_tokens=None,
        output=None,
        response=None,
        run_dir=directory,
        pid=pid,
        isolation=None,
        payload=payload,
    )


def create_run(
    db: sqlite3.Connection,
    task: str,
    trigger: str,
    trigger_id: str | None,
    slot: str | None,
    *,
    status: str,
    attempt: int,
    now: datetime,
    pid: int | None,
    delivery_id: str | None,
    event: Ledger | None,
    run_dir: Callable[[str], str | Path] | None,
    remember_slot: bool,
    run_id: str | None = None,
    payload: bytes | None = None,
    skip_reason: str | None = None,
) -> Run | None:
    """A fire's whole bookkeeping: the run row, its delivery, event, run_dir, last slot.

    None when the slot or the delivery was seen before; see `writes.create_run`.
    """
    if delivery_id is not None and webhooks.delivery_run(db, task, delivery_id) is not None:
        return None
    run = insert_run(
        db,
        task,
        trigger,
        trigger_id,
        slot,
        status=status,
        attempt=attempt,
        now=now,
        pid=pid,
        skip_reason=skip_reason,
        run_id=run_id,
        payload=payload,
        run_dir=run_dir,
    )
    if run is None:
        return None
    if attempt > 1 and slot is not None:
        # The retry owed to the previous attempt is written: no longer owed.
        db.execute(
            "UPDATE runs SET retry_at = NULL WHERE task = ? AND trigger_id = ? AND slot = ? "
            "AND attempt = ? AND retry_at IS NOT NULL",
            (task, trigger_id, slot, attempt - 1),
        )
    if delivery_id is not None:
        webhooks.insert_delivery(db, task, delivery_id, run.id, now)
    if event is not None:
        insert_event(db, event, task=task, run=run.id, now=now)
    if remember_slot and slot is not None and trigger_id is not None:
        taskstate.remember_slot(db, task, trigger_id, slot)
    return run


def start_run(
    db: sqlite3.Connection,
    run_id: str,
    *,
    pid: int,
    now: datetime,
    event: Ledger | None,
    task: str | None,
    run_dir: str | Path | None,
) -> bool:
    """Mark a queued run running (its kept payload dropped); False when no longer queued."""
    cur = db.execute(
        "UPDATE runs SET status = 'running', started_at = ?, pid = ?, payload = NULL, "
        "run_dir = COALESCE(?, run_dir) WHERE id = ? AND status = 'queued'",
        (stamp(now), pid, None if run_dir is None else str(run_dir), run_id),
    )
    if cur.rowcount:
        if event is not None:
            insert_event(db, event, task=task, run=run_id, now=now)
        return True
    if not db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        raise NotFoundError(f"no run with id {run_id!r}")
    return False


def finish_run(
    db: sqlite3.Connection,
    run_id: str,
    *,
    status: str,
    now: datetime,
    error: str | None,
    skip_reason: str | None,
    output: str | None,
    response: str | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    isolation: str | None,
    event: Ledger | None,
    only_active: bool = False,
    block_started_at: datetime | None = None,
) -> Run:
    """Record how a run ended; fields left None keep what the row already has.

    With `only_active`, a run that already ended is returned as it is.
    """
    row = db.execute("SELECT started_at, status FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    if only_active and row["status"] not in ACTIVE_STATUSES:
        return _select(db, run_id)
    db.execute(
        """UPDATE runs SET status = ?, finished_at = ?, duration_ms = ?, payload = NULL,
               error = COALESCE(?, error),
               skip_reason = COALESCE(?, skip_reason),
               output = COALESCE(?, output),
               response = COALESCE(?, response),
               model = COALESCE(?, model),
               input_tokens = COALESCE(?, input_tokens),
               output_tokens = COALESCE(?, output_tokens),
               isolation = COALESCE(?, isolation),
               block_started_at = COALESCE(?, block_started_at)
           WHERE id = ?""",
        (
            status,
            stamp(now),
            duration_ms(row["started_at"], now),
            error,
            skip_reason,
            cap_text(output),
            cap_text(response),
            model,
            input_tokens,
            output_tokens,
            isolation,
            None if block_started_at is None else stamp(block_started_at),
            run_id,
        ),
    )
    run = _select(db, run_id)
    if event is not None:
        insert_event(db, event, task=run.task, run=run_id, now=now)
    return run


def set_run_dir(db: sqlite3.Connection, run_id: str, run_dir: str) -> None:
    """Record where the run's files are."""
    cur = db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", (run_dir, run_id))
    if not cur.rowcount:
        raise NotFoundError(f"no run with id {run_id!r}")


def set_retry_at(db: sqlite3.Connection, run_id: str, at: datetime | None) -> None:
    """Record when the retry of a failed run is planned (a restarted daemon plans it
    again), or None when it is no longer owed; a run pruned meanwhile has nothing to
    record. The retry's own row clears it (`create_run`)."""
    db.execute("UPDATE runs SET retry_at = ? WHERE id = ?", (stamp(at) if at else None, run_id))


PlannedRetry = tuple[str, str, str, datetime, int, datetime]


def planned_retries(db: sqlite3.Connection) -> list[PlannedRetry]:
    """The retries owed whose run is not written yet: (failed run id, task, trigger_id,
    slot, attempt of the failed run, when its retry is planned), oldest plan first."""
    rows = db.execute(
        "SELECT id, task, trigger_id, slot, attempt, retry_at FROM runs AS failed "
        "WHERE retry_at IS NOT NULL AND slot IS NOT NULL AND NOT EXISTS ("
        "  SELECT 1 FROM runs WHERE task = failed.task AND trigger_id = failed.trigger_id"
        "  AND slot = failed.slot AND attempt = failed.attempt + 1"
        ") ORDER BY retry_at"
    ).fetchall()
    out = []
    for run_id, task, trigger_id, slot, attempt, retry_at in rows:
        slot_at, at = parse_time(slot), parse_time(retry_at)
        if slot_at is not None and at is not None:
            out.append((str(run_id), str(task), str(trigger_id), slot_at, int(attempt), at))
    return out


def _interrupt(db: sqlite3.Connection, row: sqlite3.Row, now: datetime) -> Run:
    pid = row["pid"]
    owner = f"its process (pid {pid})" if pid is not None else "its process"
    db.execute(
        "UPDATE runs SET status = 'interrupted', finished_at = ?, duration_ms = ?, "
        "payload = NULL, error = COALESCE(error, ?) WHERE id = ?",
        (
            stamp(now),
            duration_ms(row["started_at"], now),
            f"{owner} ended before the run finished",
            row["id"],
        ),
    )
    return _select(db, row["id"])


def _stale_rows(db: sqlite3.Connection, alive: Callable[[int], bool]) -> list[sqlite3.Row]:
    """Queued or running rows whose pid is gone (or unset), oldest first."""
    rows = db.execute(
        "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY queued_at, id"
    ).fetchall()
    return [row for row in rows if row["pid"] is None or not alive(row["pid"])]


def mark_interrupted(
    db: sqlite3.Connection, alive: Callable[[int], bool], now: datetime
) -> list[Run]:
    """Mark queued or running runs whose pid is not `alive` as `interrupted`; return them."""
    return [_interrupt(db, row, now) for row in _stale_rows(db, alive)]


def settle_stale(
    db: sqlite3.Connection,
    alive: Callable[[int], bool],
    adopt: Callable[[Run], bool],
    pid: int,
    now: datetime,
) -> tuple[list[Run], list[Run]]:
    """Interrupt stale running runs and the stale queued ones `adopt` refuses (each with a
    `run.finished` event); the queued ones it accepts become `pid`'s. Returns
    (interrupted, adopted)."""
    interrupted: list[Run] = []
    adopted: list[Run] = []
    for row in _stale_rows(db, alive):
        if row["status"] == "queued" and adopt(Run.from_row(row)):
            db.execute("UPDATE runs SET pid = ? WHERE id = ?", (pid, row["id"]))
            adopted.append(_select(db, row["id"]))
        else:
            run = _interrupt(db, row, now)
            detail = {"status": run.status, "error": run.error}
            insert_event(db, ("daemon", "run.finished", detail), task=run.task, run=run.id, now=now)
            interrupted.append(run)
    return interrupted, adopted


def queue_catch_up(
    db: sqlite3.Connection,
    task: str,
    trigger_id: str,
    slots: Sequence[tuple[str, str]],
    *,
    now: datetime,
    pid: int,
) -> list[Run]:
    """Insert a `queued` catch-up run for each (slot, run id) not recorded yet."""
    created: list[Run] = []
    for slot, run_id in slots:
        run = insert_run(
            db,
            task,
            "catch-up",
            trigger_id,
            slot,
            status="queued",
            attempt=1,
            now=now,
            pid=pid,
            run_id=run_id,
        )
        if run is not None:
            created.append(run)
    return created


def record_missed(
    db: sqlite3.Connection,
    task: str,
    trigger_id: str,
    slots: Sequence[str | None],
    *,
    now: datetime,
    reason: str,
) -> list[Run]:
    """Insert a `missed` run for each slot not recorded yet; return the new ones."""
    created: list[Run] = []
    for slot in slots:
        run = insert_run(
            db,
            task,
            "schedule",
            trigger_id,
            slot,
            status="missed",
            attempt=1,
            now=now,
            pid=None,
            skip_reason=reason,
        )
        if run is not None:
            created.append(run)
    return created


# --- reads --------------------------------------------------------------------------------


def get_run(db: sqlite3.Connection, ref: str) -> Run | None:
    """The run with this id or unique id prefix; UsageError when ambiguous."""
    row = db.execute("SELECT * FROM runs WHERE id = ?", (ref,)).fetchone()
    if row is not None:
        return Run.from_row(row)
    # A range scan on the primary key: every id starting with ref sorts in here.
    rows = db.execute(
        "SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 6",
        (ref, ref + "\U0010ffff"),
    ).fetchall()
    if len(rows) > 1:
        shown = ", ".join(r["id"] for r in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise UsageError(
            f"run id prefix {ref!r} is ambiguous: it matches {shown}",
            hint="give more characters of the run id",
        )
    return Run.from_row(rows[0]) if rows else None


def list_runs(
    db: sqlite3.Connection, task: str | None, status: str | None, limit: int | None
) -> list[Run]:
    """Runs, newest first, optionally of one task and/or one status."""
    sql, params = select("runs", [("task = ?", task), ("status = ?", status)])
    sql += " ORDER BY queued_at DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [Run.from_row(row) for row in db.execute(sql, params).fetchall()]


def running_runs(db: sqlite3.Connection, task: str | None, include_queued: bool) -> list[Run]:
    """Runs now running (and queued, if asked), oldest first."""
    statuses = ACTIVE_STATUSES if include_queued else ("running",)
    sql = f"SELECT * FROM runs WHERE status IN ({','.join('?' * len(statuses))})"
    params: list[Any] = list(statuses)
    if task is not None:
        sql += " AND task = ?"
        params.append(task)
    sql += " ORDER BY queued_at, id"
    return [Run.from_row(row) for row in db.execute(sql, params).fetchall()]


def last_isolation(db: sqlite3.Connection) -> dict[str, str]:
    """Per task, the isolation its latest run with blocks got (`task ls`)."""
    rows = db.execute(
        "SELECT task, isolation FROM runs WHERE isolation IS NOT NULL "
        "ORDER BY COALESCE(started_at, queued_at), rowid"
    ).fetchall()
    return {str(r["task"]): str(r["isolation"]) for r in rows}  # the latest wins


def latest_runs(db: sqlite3.Connection) -> dict[str, Run]:
    """The newest run of every task that has runs (by queue time, then id): `task ls`'s
    LAST RUN. One pass over the `runs_task` index."""
    rows = db.execute(
        """SELECT r.* FROM runs r
           JOIN (SELECT task, MAX(queued_at) AS q FROM runs GROUP BY task) m
             ON r.task = m.task AND r.queued_at = m.q
           ORDER BY r.id"""
    ).fetchall()
    return {row["task"]: Run.from_row(row) for row in rows}  # ties: the larger id wins
