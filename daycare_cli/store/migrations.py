"""The schema of the state database, built by append-only, named migrations.

Like llm's logs database: each migration is a function `mNNN_what(db)`, the names of the
applied ones are recorded in `_migrations`, and the missing ones run, in order, when the
store opens. A shipped migration is never edited: a change to the schema is a new
function appended to `MIGRATIONS`, and a new row in docs/state-schema.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from daycare_cli.store.rows import stamp

Migration = Callable[[sqlite3.Connection], None]


# --- migrations (append-only: never edit a shipped one, add m002_..., and document it) ---


def m001_initial(db: sqlite3.Connection) -> None:
    """Runs, events, trigger and task state, webhook tokens, webhook deliveries."""
    statements = [
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            trigger TEXT NOT NULL,
            trigger_id TEXT,
            slot TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL,
            queued_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            duration_ms INTEGER,
            skip_reason TEXT,
            error TEXT,
            model TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            output TEXT,
            response TEXT,
            run_dir TEXT,
            pid INTEGER,
            isolation TEXT
        )""",
        # A slot fires once: a restarted daemon finds the row and does not fire it again.
        """CREATE UNIQUE INDEX runs_slot ON runs (task, trigger_id, slot, attempt)
            WHERE slot IS NOT NULL""",
        "CREATE INDEX runs_task ON runs (task, queued_at)",
        "CREATE INDEX runs_queued_at ON runs (queued_at)",
        "CREATE INDEX runs_active ON runs (status) WHERE status IN ('queued', 'running')",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            task TEXT,
            run TEXT,
            detail TEXT
        )""",
        "CREATE INDEX events_task ON events (task, id)",
        "CREATE INDEX events_run ON events (run, id)",
        """CREATE TABLE trigger_state (
            task TEXT NOT NULL,
            trigger_id TEXT NOT NULL,
            last_slot TEXT,
            last_fire_at TEXT,
            failure_streak INTEGER NOT NULL DEFAULT 0,
            flagged INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (task, trigger_id)
        )""",
        """CREATE TABLE task_state (
            task TEXT PRIMARY KEY,
            failure_streak INTEGER NOT NULL DEFAULT 0,
            flagged INTEGER NOT NULL DEFAULT 0,
            last_success_run TEXT,
            last_failure_run TEXT
        )""",
        """CREATE TABLE webhook_tokens (
            token_hash TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            trigger_id TEXT NOT NULL,
            token TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        # One active token per webhook trigger.
        """CREATE UNIQUE INDEX webhook_tokens_active ON webhook_tokens (task, trigger_id)
            WHERE revoked_at IS NULL""",
        """CREATE TABLE deliveries (
            task TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (task, delivery_id)
        )""",
    ]
    # Statement by statement: executescript() would commit the migration's transaction.
    for statement in statements:
        db.execute(statement)


def m002_run_payload(db: sqlite3.Connection) -> None:
    """A queued webhook run keeps its payload in its row until it starts (durable 202)."""
    db.execute("ALTER TABLE runs ADD COLUMN payload BLOB")


def m003_finished_runs_index(db: sqlite3.Connection) -> None:
    """Finished runs of a task by time, so retention reads only those: a task with thousands
    of queued runs (a webhook burst) no longer makes every run's pruning scan them all."""
    db.execute(
        "CREATE INDEX runs_finished ON runs (task, queued_at) "
        "WHERE status NOT IN ('queued', 'running')"
    )


def m004_block_started_at(db: sqlite3.Connection) -> None:
    """When a run's first block was spawned, beside when its row was written (`queued_at`)
    and when it started (`started_at`: lock taken, workspace ready): the three instants
    its lateness is measured at."""
    db.execute("ALTER TABLE runs ADD COLUMN block_started_at TEXT")


def m005_planned_retries(db: sqlite3.Connection) -> None:
    """When the retry of a failed run is planned (`retry_at`), so a daemon killed or
    stopped while it waits plans it again at its next start; the partial index reads only
    those rows."""
    db.execute("ALTER TABLE runs ADD COLUMN retry_at TEXT")
    db.execute("CREATE INDEX runs_retry_at ON runs (retry_at) WHERE retry_at IS NOT NULL")


MIGRATIONS: tuple[Migration, ...] = (
    m001_initial,
    m002_run_payload,
    m003_finished_runs_index,
    m004_block_started_at,
    m005_planned_retries,
)


# --- applying them --------------------------------------------------------------------


def applied_names(db: sqlite3.Connection) -> set[str]:
    """The names of the migrations this database has (none before the first)."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if not exists:
        return set()
    return {row["name"] for row in db.execute("SELECT name FROM _migrations")}


def up_to_date(db: sqlite3.Connection, migrations: Sequence[Migration]) -> bool:
    """Whether every migration is applied: the common case, answered without a write lock."""
    return {m.__name__ for m in migrations} <= applied_names(db)


def apply_missing(db: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Run the migrations not yet recorded, in order, inside the caller's write transaction.

    The applied names are read again here, under the write lock: another process may have
    migrated since `up_to_date` looked.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = applied_names(db)
    for migration in migrations:
        if migration.__name__ in done:
            continue
        migration(db)
        db.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
            (migration.__name__, stamp(datetime.now(UTC))),
        )


def applied_history(db: sqlite3.Connection) -> list[tuple[str, datetime]]:
    """The applied migrations with when they ran, in order."""
    rows = db.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    return [(row["name"], datetime.fromisoformat(row["applied_at"])) for row in rows]
