"""Runs whose row is written `queued` before they start: what the scheduler needs to run
one later (a catch-up run, or one a dead daemon left), and which of them a restarted
daemon runs instead of marking them interrupted (docs/operations.md, "Runs").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daycare_cli.store import writes
from daycare_cli.store.database import describe
from daycare_cli.store.rows import Run
from daycare_cli.store.writes import Transaction

log = logging.getLogger("daycare.daemon")

# Queued runs a restarted daemon runs (once each) instead of marking them interrupted: a
# 202 promised the webhook ones, the catch-up policy chose the catch-up ones, and the
# scheduled ones held their slot. A waiting manual run is interrupted: whoever asked for
# it went away with the daemon's socket.
RESUMED = ("webhook", "catch-up", "schedule", "retry")


@dataclass
class Queued:
    """A run whose row is written `queued`: what `Scheduler.resume` needs to run it."""

    run_id: str
    task_id: str
    trigger: str
    trigger_id: str | None
    slot: datetime | None
    attempt: int = 1
    payload: bytes | None = None
    row: asyncio.Future[Run | None] | None = None  # the pending commit of its row, if any

    @classmethod
    def of(cls, run: Run) -> Queued:
        """A queued run as read back from state.db (its payload with it)."""
        return cls(
            run.id, run.task, run.trigger, run.trigger_id, run.slot, run.attempt, run.payload
        )


def retrieve(row: asyncio.Future[Any]) -> None:
    """Done callback for a row nobody awaits any more: its failure was logged where it
    happened; retrieving it keeps asyncio from reporting it again."""
    if not row.cancelled():
        row.exception()


def log_skipped(task_id: str, run_id: str, reason: str, row: asyncio.Future[Run | None]) -> None:
    """Done callback of a fire written `skipped` (overlap): log it once it is recorded."""
    if row.cancelled():
        return
    exc = row.exception()
    if exc is not None:
        log.error("%s: skipped run %s not recorded: %s", task_id, run_id, describe(exc))
    elif row.result() is not None:
        log.info("%s: run %s skipped: %s", task_id, run_id, reason)


def unrun(run_id: str, status: str, why: str) -> Transaction[Run]:
    """End a run that will not run (on) here (`cancelled`, `skipped`, `interrupted`, or
    `failed` when its runner crashed), saying why, with its `run.finished` event; a run
    that ended meanwhile keeps its end."""
    key = "skip_reason" if status == "skipped" else "error"
    event = ("daemon", "run.finished", {"status": status, key: why})
    return writes.finish_run(
        run_id,
        status=status,
        only_active=True,
        event=event,
        error=why if key == "error" else None,
        skip_reason=why if key == "skip_reason" else None,
    )


def rows_of(
    created: asyncio.Future[list[Run]], run_ids: list[str]
) -> list[asyncio.Future[Run | None]]:
    """One future per run id out of a commit that creates several runs: the run, or None
    when its slot had a row already. A failed commit fails them all."""
    loop = asyncio.get_running_loop()
    rows: list[asyncio.Future[Run | None]] = [loop.create_future() for _ in run_ids]

    def split(done: asyncio.Future[list[Run]]) -> None:
        if done.cancelled():
            for row in rows:
                row.cancel()
            return
        exc = done.exception()
        made = {} if exc is not None else {run.id: run for run in done.result()}
        for run_id, row in zip(run_ids, rows, strict=True):
            if row.done():
                continue
            if exc is not None:
                row.set_exception(exc)
            else:
                row.set_result(made.get(run_id))

    if not rows:
        # Nobody awaits the rows: a failure is still logged, not left unretrieved.
        created.add_done_callback(_log_failure)
    else:
        created.add_done_callback(split)
    return rows


def _log_failure(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("a catch-up was not recorded: %s", done.exception())
