"""Retention (docs/operations.md, "Where things live"): which finished runs and deliveries of a
task are deleted.

Functions over a connection: `prune` runs inside the caller's write transaction (see
`State._write`); `needs_pruning` is the read that spares most runs that transaction.
"""

from __future__ import annotations

import sqlite3

from daycare_cli.core.streak import FAILURE_STATUSES

# Spelled as the partial index `runs_finished` is (m003), so SQLite reads only that index.
_FINISHED = "status NOT IN ('queued', 'running')"


def needs_pruning(db: sqlite3.Connection, task: str, keep: int, cutoff: str) -> bool:
    """Whether the task has more than `keep` finished runs, or one queued before `cutoff`."""
    count, oldest = db.execute(
        f"SELECT count(*), min(queued_at) FROM runs WHERE task = ? AND {_FINISHED}",
        (task,),
    ).fetchone()
    return not (count <= keep and (oldest is None or oldest >= cutoff))


def prune(db: sqlite3.Connection, task: str, keep: int, cutoff: str) -> list[str]:
    """Delete the task's finished runs beyond the newest `keep` or queued before `cutoff`,
    but its last success, its last failure and a failure whose retry is still owed, and
    its deliveries before `cutoff`.

    Returns the `run_dir` of every deleted run. Only the runs to delete are read (with
    the run after each run, that is usually one), not the `keep` runs that stay.
    """
    order = "ORDER BY queued_at DESC, id DESC"
    protected = {
        row[0]
        for statuses in (("succeeded",), tuple(FAILURE_STATUSES))
        for row in db.execute(
            # `_FINISHED` too, so the partial index of finished runs serves the scan.
            f"SELECT id FROM runs WHERE task = ? AND {_FINISHED} "
            f"AND status IN ({','.join('?' * len(statuses))}) {order} LIMIT 1",
            (task, *statuses),
        )
    }
    doomed = {
        row[0]: row[1]
        for row in db.execute(
            f"SELECT id, run_dir FROM runs WHERE task = ? AND {_FINISHED} {order} "
            f"LIMIT -1 OFFSET ?",
            (task, keep),
        )
    }
    doomed.update(
        db.execute(
            f"SELECT id, run_dir FROM runs WHERE task = ? AND {_FINISHED} AND queued_at < ?",
            (task, cutoff),
        ).fetchall()
    )
    # A failed run whose retry is still owed keeps the record of it (`retry_at`). Through
    # the partial index of those few rows: SQLite would otherwise pick the task's index
    # and read every run of the task (10,000 queued webhook runs) at each run's end.
    protected.update(
        row[0]
        for row in db.execute(
            "SELECT id FROM runs INDEXED BY runs_retry_at WHERE retry_at IS NOT NULL AND task = ?",
            (task,),
        )
    )
    for run_id in protected:
        doomed.pop(run_id, None)
    db.executemany("DELETE FROM runs WHERE id = ?", [(run_id,) for run_id in doomed])
    db.execute("DELETE FROM deliveries WHERE task = ? AND at < ?", (task, cutoff))
    return [run_dir for run_dir in doomed.values() if run_dir]
