"""Retention (DESIGN.md §2): which finished runs and deliveries of a task are deleted.

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
    but its last success and last failure, and its deliveries before `cutoff`.

    Returns the `run_dir` of every deleted run.
    """
    rows = db.execute(
        f"SELECT id, status, queued_at, run_dir FROM runs "
        f"WHERE task = ? AND {_FINISHED} ORDER BY queued_at DESC, id DESC",
        (task,),
    ).fetchall()
    protected: set[str] = set()
    for want in (("succeeded",), tuple(FAILURE_STATUSES)):
        last = next((r["id"] for r in rows if r["status"] in want), None)
        if last is not None:
            protected.add(last)
    doomed = [
        row
        for index, row in enumerate(rows)
        if row["id"] not in protected and (index >= keep or row["queued_at"] < cutoff)
    ]
    db.executemany("DELETE FROM runs WHERE id = ?", [(row["id"],) for row in doomed])
    db.execute("DELETE FROM deliveries WHERE task = ? AND at < ?", (task, cutoff))
    return [row["run_dir"] for row in doomed if row["run_dir"]]
