"""The state database `<home>/state.db`: runs, events, trigger state, tokens (DESIGN.md §2, §5, §6).

SQLite in WAL mode, shared by the daemon and CLI processes. Every method is one short
transaction: writes take the write lock up front (`BEGIN IMMEDIATE`) so two processes
never deadlock upgrading a read lock, and `busy_timeout` makes the other wait instead of
failing. The schema is built by append-only, named migrations (`m001_initial`, ...), like
llm's logs database: their names are recorded in `_migrations`, the missing ones run when
the store opens, and a shipped migration is never edited. docs/state-schema.md describes
every table; keep it in step with each new migration.

Times are stored as UTC ISO 8601 text with an explicit `+00:00` offset (fixed width, so
text order is time order) and come back as aware datetimes. Every method that records a
time takes `now` so tests control the clock; it defaults to the current time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from daycare_cli.core.errors import NotFoundError, UsageError, UserError
from daycare_cli.core.streak import (
    DEFAULT_THRESHOLD,
    FAILURE_STATUSES,
    StreakChange,
    next_streak,
)
from daycare_cli.store.paths import pid_alive

TRIGGERS = ("schedule", "webhook", "manual", "catch-up", "retry")
STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "timed_out",
    "interrupted",
    "cancelled",
    "missed",
)
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = tuple(s for s in STATUSES if s not in ACTIVE_STATUSES)
ACTORS = ("cli", "file", "schedule", "webhook", "daemon", "runner")

TEXT_CAP = 1024 * 1024  # output/response kept in the row; the full text is in the run dir
CUT_MARKER = "\n[… cut at 1 MiB; the full text is in the run directory]"
BUSY_TIMEOUT_MS = 5000

Migration = Callable[[sqlite3.Connection], None]


class StateError(UserError):
    """The state database cannot be opened (unwritable home, not a database)."""

    exit_code = 1


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


MIGRATIONS: tuple[Migration, ...] = (m001_initial,)


# --- times ----------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got naive {now.isoformat()}")
    return now


def _stamp(dt: datetime) -> str:
    """A recorded time as stored: UTC, milliseconds, `+00:00`; fixed width sorts as text."""
    return _now(dt).astimezone(UTC).isoformat(timespec="milliseconds")


def _slot_text(slot: datetime | str | None) -> str | None:
    """A slot as stored: the UTC instant in ISO 8601, so one instant has one spelling."""
    if slot is None:
        return None
    value = datetime.fromisoformat(slot) if isinstance(slot, str) else slot
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"slot must be an aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC).isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _duration_ms(started_at: str | None, now: datetime) -> int | None:
    """Milliseconds from a stored start to `now`, both at the stored precision."""
    if started_at is None:
        return None
    elapsed = datetime.fromisoformat(_stamp(now)) - datetime.fromisoformat(started_at)
    return max(0, round(elapsed.total_seconds() * 1000))


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


Ledger = tuple[str, str, "dict[str, Any] | None"]  # (actor, kind, detail) of an event


def _insert_event(
    db: sqlite3.Connection,
    event: Ledger,
    *,
    task: str | None,
    run: str | None,
    now: datetime,
) -> int:
    """Append an event inside the caller's transaction; returns its id."""
    actor, kind, detail = event
    if actor not in ACTORS:
        raise ValueError(f"unknown actor {actor!r}; expected one of {', '.join(ACTORS)}")
    if not kind:
        raise ValueError("an event needs a kind")
    text = None
    if detail is not None:
        text = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
    cur = db.execute(
        "INSERT INTO events (at, actor, kind, task, run, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (_stamp(now), actor, kind, task, run, text),
    )
    return int(cur.lastrowid or 0)


def new_run_id(now: datetime) -> str:
    """A run id that sorts by time: `20261122T090000Z-7f3a9c01` (UTC second, 32 random bits).

    16 bits were too few: over 100 runs of a task in one second (a webhook burst) let
    retention delete a row whose id was then drawn again.
    """
    return f"{_now(now).astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _cap(text: str | None, limit: int = TEXT_CAP) -> str | None:
    """Text cut to `limit` UTF-8 bytes (on a character boundary) with a marker."""
    if text is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + CUT_MARKER


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch the database to WAL (a persistent setting) unless it already is.

    Processes opening a new database at once race for the switch, and SQLite does not
    call the busy handler for it: retry "locked" until the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One row of `runs`: a fire of a task and what became of it."""

    id: str
    task: str
    trigger: str
    trigger_id: str | None
    slot: datetime | None
    attempt: int
    status: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    skip_reason: str | None
    error: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    output: str | None
    response: str | None
    run_dir: str | None
    pid: int | None
    isolation: str | None

    @property
    def active(self) -> bool:
        """Queued or running: not finished yet."""
        return self.status in ACTIVE_STATUSES

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        """A Run from a `SELECT * FROM runs` row."""
        return cls(
            id=row["id"],
            task=row["task"],
            trigger=row["trigger"],
            trigger_id=row["trigger_id"],
            slot=_parse(row["slot"]),
            attempt=row["attempt"],
            status=row["status"],
            queued_at=datetime.fromisoformat(row["queued_at"]),
            started_at=_parse(row["started_at"]),
            finished_at=_parse(row["finished_at"]),
            duration_ms=row["duration_ms"],
            skip_reason=row["skip_reason"],
            error=row["error"],
            model=row["model"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            output=row["output"],
            response=row["response"],
            run_dir=row["run_dir"],
            pid=row["pid"],
            isolation=row["isolation"],
        )

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of `runs ls/show --json` and `task run --json` (DESIGN.md §7)."""
        return {
            "id": self.id,
            "task": self.task,
            "trigger": self.trigger,
            "slot": _iso(self.slot),
            "attempt": self.attempt,
            "status": self.status,
            "queued_at": _iso(self.queued_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "output": self.output,
            "response": self.response,
            "error": self.error,
            "skip_reason": self.skip_reason,
            "run_dir": self.run_dir,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "isolation": self.isolation,
        }


@dataclass(frozen=True)
class Event:
    """One row of the audit ledger: who did what to which task or run, when."""

    id: int
    at: datetime
    actor: str
    kind: str
    task: str | None
    run: str | None
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Event:
        """An Event from a `SELECT * FROM events` row."""
        return cls(
            id=row["id"],
            at=datetime.fromisoformat(row["at"]),
            actor=row["actor"],
            kind=row["kind"],
            task=row["task"],
            run=row["run"],
            detail=None if row["detail"] is None else json.loads(row["detail"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of `daycare events --json`."""
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "kind": self.kind,
            "task": self.task,
            "run": self.run,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class TriggerState:
    """What the daemon remembers about one trigger between starts."""

    task: str
    trigger_id: str
    last_slot: datetime | None = None
    last_fire_at: datetime | None = None
    failure_streak: int = 0
    flagged: bool = False

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TriggerState:
        """A TriggerState from a `SELECT * FROM trigger_state` row."""
        return cls(
            task=row["task"],
            trigger_id=row["trigger_id"],
            last_slot=_parse(row["last_slot"]),
            last_fire_at=_parse(row["last_fire_at"]),
            failure_streak=row["failure_streak"],
            flagged=bool(row["flagged"]),
        )


@dataclass(frozen=True)
class TaskState:
    """The failure streak of a task and its last success and failure."""

    task: str
    failure_streak: int = 0
    flagged: bool = False
    last_success_run: str | None = None
    last_failure_run: str | None = None


# --- the store ------------------------------------------------------------------------


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
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file ourselves so its mode never depends on the umask; SQLite
            # gives the -wal and -shm files the mode of the database file.
            fd = os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot open the state database: {exc.strerror or exc}",
                path=str(db_path),
                hint="check that the daycare home is writable, or set DAYCARE_HOME",
            ) from None
        try:
            if os.fstat(fd).st_mode & 0o077:
                with contextlib.suppress(OSError):  # not ours to change: leave it
                    os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        db = sqlite3.connect(
            db_path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enable_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            state = cls(db, db_path)
            state._migrate(migrations)
        except sqlite3.DatabaseError as exc:
            db.close()
            if "file is not a database" not in str(exc):
                raise
            raise StateError(
                "this file is not a SQLite database",
                path=str(db_path),
                hint="move it aside; daycare creates a new state database on the next start",
            ) from None
        except BaseException:
            db.close()
            raise
        return state

    def _applied(self) -> set[str]:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
        ).fetchone()
        if not exists:
            return set()
        return {row["name"] for row in self._db.execute("SELECT name FROM _migrations")}

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        """Run the migrations not yet recorded, in order, in one write transaction."""
        names = [m.__name__ for m in migrations]
        if set(names) <= self._applied():  # the common case needs no write lock
            return
        with self._write() as db:
            # Recheck under the lock: another process may have migrated meanwhile.
            db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = self._applied()
            for migration in migrations:
                if migration.__name__ in applied:
                    continue
                migration(db)
                db.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (migration.__name__, _stamp(datetime.now(UTC))),
                )

    def migrations(self) -> list[tuple[str, datetime]]:
        """The applied migrations with when they ran, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, applied_at FROM _migrations ORDER BY name"
            ).fetchall()
        return [(row["name"], datetime.fromisoformat(row["applied_at"])) for row in rows]

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

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken at BEGIN, not at the first write."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- runs ---------------------------------------------------------------------------

    def _insert_run(
        self,
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
    ) -> Run | None:
        """Insert a run row inside the caller's transaction; None when its slot exists."""
        if slot is not None:
            taken = db.execute(
                "SELECT 1 FROM runs WHERE task = ? AND trigger_id = ? AND slot = ? AND attempt = ?",
                (task, trigger_id, slot, attempt),
            ).fetchone()
            if taken:
                return None
        while True:  # 32 random bits a second: a collision is rare but cheap to avoid
            run_id = new_run_id(now)
            if not db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                break
        stamp = _stamp(now)
        db.execute(
            """INSERT INTO runs (id, task, trigger, trigger_id, slot, attempt, status,
                   queued_at, started_at, finished_at, skip_reason, pid)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                run_id,
                task,
                trigger,
                trigger_id,
                slot,
                attempt,
                status,
                stamp,
                stamp if status == "running" else None,
                None if status in ACTIVE_STATUSES else stamp,
                skip_reason,
                pid,
            ),
        )
        return Run.from_row(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

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
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}; expected one of {', '.join(TRIGGERS)}")
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        if attempt < 1:
            raise ValueError(f"attempt must be at least 1, got {attempt}")
        slot_text = _slot_text(slot)
        if slot_text is not None and trigger_id is None:
            # NULLs are distinct in a unique index: the slot key needs the trigger id.
            raise ValueError("a run with a slot needs its trigger_id")
        now = _now(now)
        if pid is None and status in ACTIVE_STATUSES:
            pid = os.getpid()
        with self._write() as db:
            if delivery_id is not None:
                seen = db.execute(
                    "SELECT 1 FROM deliveries WHERE task = ? AND delivery_id = ?",
                    (task, delivery_id),
                ).fetchone()
                if seen:
                    return None
            run = self._insert_run(
                db,
                task,
                trigger,
                trigger_id,
                slot_text,
                status=status,
                attempt=attempt,
                now=now,
                pid=pid,
            )
            if run is not None and delivery_id is not None:
                db.execute(
                    "INSERT INTO deliveries (task, delivery_id, run_id, at) VALUES (?, ?, ?, ?)",
                    (task, delivery_id, run.id, _stamp(now)),
                )
            if run is None:
                return None
            if event is not None:
                _insert_event(db, event, task=task, run=run.id, now=now)
            if run_dir is not None:
                directory = str(run_dir(run.id))
                db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", (directory, run.id))
                run = replace(run, run_dir=directory)
            if remember_slot and slot_text is not None:
                db.execute(
                    "INSERT INTO trigger_state (task, trigger_id, last_slot) VALUES (?, ?, ?) "
                    "ON CONFLICT (task, trigger_id) DO UPDATE SET last_slot = excluded.last_slot",
                    (task, trigger_id, slot_text),
                )
            return run

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
        now = _now(now)
        with self._write() as db:
            cur = db.execute(
                "UPDATE runs SET status = 'running', started_at = ?, pid = ?, "
                "run_dir = COALESCE(?, run_dir) WHERE id = ? AND status = 'queued'",
                (
                    _stamp(now),
                    os.getpid() if pid is None else pid,
                    None if run_dir is None else str(run_dir),
                    run_id,
                ),
            )
            if cur.rowcount:
                if event is not None:
                    _insert_event(db, event, task=task, run=run_id, now=now)
                return True
            if not db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                raise NotFoundError(f"no run with id {run_id!r}")
            return False

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
        now = _now(now)
        with self._write() as db:
            row = db.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            duration = _duration_ms(row["started_at"], now)
            db.execute(
                """UPDATE runs SET status = ?, finished_at = ?, duration_ms = ?,
                       error = COALESCE(?, error),
                       skip_reason = COALESCE(?, skip_reason),
                       output = COALESCE(?, output),
                       response = COALESCE(?, response),
                       model = COALESCE(?, model),
                       input_tokens = COALESCE(?, input_tokens),
                       output_tokens = COALESCE(?, output_tokens),
                       isolation = COALESCE(?, isolation)
                   WHERE id = ?""",
                (
                    status,
                    _stamp(now),
                    duration,
                    error,
                    skip_reason,
                    _cap(output),
                    _cap(response),
                    model,
                    input_tokens,
                    output_tokens,
                    isolation,
                    run_id,
                ),
            )
            run = Run.from_row(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
            if event is not None:
                _insert_event(db, event, task=run.task, run=run_id, now=now)
            return run

    def set_run_dir(self, run_id: str, run_dir: str | Path) -> None:
        """Record where the run's files are (prune returns it so the caller can delete it)."""
        with self._write() as db:
            cur = db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", (str(run_dir), run_id))
            if not cur.rowcount:
                raise NotFoundError(f"no run with id {run_id!r}")

    def get_run(self, ref: str) -> Run | None:
        """The run with this id or unique id prefix (like git); None when nothing matches.

        Raises UsageError when the prefix matches more than one run.
        """
        if not ref:
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (ref,)).fetchone()
            if row is not None:
                return Run.from_row(row)
            # A range scan on the primary key: every id starting with ref sorts in here.
            rows = self._db.execute(
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
        self, task: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[Run]:
        """Runs, newest first, optionally of one task and/or one status."""
        where: list[str] = []
        params: list[Any] = []
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY queued_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Run.from_row(row) for row in self._read(sql, params)]

    def running_runs(self, task: str | None = None, *, include_queued: bool = False) -> list[Run]:
        """Runs now running (and queued, if asked), oldest first."""
        statuses = ACTIVE_STATUSES if include_queued else ("running",)
        sql = f"SELECT * FROM runs WHERE status IN ({','.join('?' * len(statuses))})"
        params: list[Any] = list(statuses)
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        sql += " ORDER BY queued_at, id"
        return [Run.from_row(row) for row in self._read(sql, params)]

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
        now = _now(now)
        stamp = _stamp(now)
        interrupted: list[Run] = []
        with self._write() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY queued_at, id"
            ).fetchall()
            for row in rows:
                pid = row["pid"]
                if pid is not None and alive(pid):
                    continue
                duration = _duration_ms(row["started_at"], now)
                owner = f"its process (pid {pid})" if pid is not None else "its process"
                db.execute(
                    "UPDATE runs SET status = 'interrupted', finished_at = ?, duration_ms = ?, "
                    "error = COALESCE(error, ?) WHERE id = ?",
                    (stamp, duration, f"{owner} ended before the run finished", row["id"]),
                )
                interrupted.append(
                    Run.from_row(
                        db.execute("SELECT * FROM runs WHERE id = ?", (row["id"],)).fetchone()
                    )
                )
        return interrupted

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
        now = _now(now)
        texts = [_slot_text(s) for s in slots]
        created: list[Run] = []
        with self._write() as db:
            for slot in texts:
                run = self._insert_run(
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
        now = _now(now)
        cutoff = _stamp(now - timedelta(days=max_age_days))
        finished = ",".join("?" * len(FINISHED_STATUSES))
        # Most runs have nothing to prune: a read answers that without a write transaction.
        count, oldest = self._read(
            f"SELECT count(*), min(queued_at) FROM runs WHERE task = ? AND status IN ({finished})",
            (task, *FINISHED_STATUSES),
        )[0]
        if count <= keep and (oldest is None or oldest >= cutoff):
            return []
        with self._write() as db:
            rows = db.execute(
                f"SELECT id, status, queued_at, run_dir FROM runs "
                f"WHERE task = ? AND status IN ({finished}) ORDER BY queued_at DESC, id DESC",
                (task, *FINISHED_STATUSES),
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
        with self._write() as db:
            return _insert_event(db, (actor, kind, detail), task=task, run=run, now=_now(now))

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
        where: list[str] = []
        params: list[Any] = []
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if run is not None:
            where.append("run = ?")
            params.append(run)
        if since_id is not None:
            where.append("id > ?")
            params.append(since_id)
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id" if since_id is not None else " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        events = [Event.from_row(row) for row in self._read(sql, params)]
        return events if since_id is not None else events[::-1]

    # -- trigger and task state -----------------------------------------------------------

    def get_trigger_state(self, task: str, trigger_id: str) -> TriggerState:
        """What is remembered about a trigger; a fresh state if nothing is."""
        rows = self._read(
            "SELECT * FROM trigger_state WHERE task = ? AND trigger_id = ?", (task, trigger_id)
        )
        return TriggerState.from_row(rows[0]) if rows else TriggerState(task, trigger_id)

    def trigger_states(self, task: str | None = None) -> list[TriggerState]:
        """Every remembered trigger state (of one task), for the daemon's start."""
        if task is None:
            rows = self._read("SELECT * FROM trigger_state ORDER BY task, trigger_id")
        else:
            rows = self._read(
                "SELECT * FROM trigger_state WHERE task = ? ORDER BY trigger_id", (task,)
            )
        return [TriggerState.from_row(row) for row in rows]

    def plan_from(self, rows: Iterable[tuple[str, str, datetime]]) -> None:
        """Record, in one commit, the instant each new trigger was first planned from.

        For a trigger that never fired, `last_slot` is that instant, so a daemon that is
        down when its first slot passes still sees the slot as missed at the next start.
        Triggers that already have a state keep it.
        """
        with self._write() as db:
            db.executemany(
                "INSERT INTO trigger_state (task, trigger_id, last_slot) VALUES (?, ?, ?) "
                "ON CONFLICT (task, trigger_id) DO NOTHING",
                [(task, trigger_id, _slot_text(at)) for task, trigger_id, at in rows],
            )

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
        with self._write() as db:
            db.execute(
                "INSERT INTO trigger_state (task, trigger_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (task, trigger_id),
            )
            db.execute(
                """UPDATE trigger_state SET last_slot = COALESCE(?, last_slot),
                       last_fire_at = COALESCE(?, last_fire_at),
                       failure_streak = COALESCE(?, failure_streak),
                       flagged = COALESCE(?, flagged)
                   WHERE task = ? AND trigger_id = ?""",
                (
                    _slot_text(last_slot),
                    None if last_fire_at is None else _stamp(last_fire_at),
                    failure_streak,
                    None if flagged is None else int(flagged),
                    task,
                    trigger_id,
                ),
            )
            row = db.execute(
                "SELECT * FROM trigger_state WHERE task = ? AND trigger_id = ?", (task, trigger_id)
            ).fetchone()
            return TriggerState.from_row(row)

    def get_task_state(self, task: str) -> TaskState:
        """A task's failure streak and last success and failure; a fresh state if none."""
        rows = self._read("SELECT * FROM task_state WHERE task = ?", (task,))
        if not rows:
            return TaskState(task)
        row = rows[0]
        return TaskState(
            task=task,
            failure_streak=row["failure_streak"],
            flagged=bool(row["flagged"]),
            last_success_run=row["last_success_run"],
            last_failure_run=row["last_failure_run"],
        )

    def flagged_tasks(self) -> list[str]:
        """Tasks whose failure streak reached the threshold and has not recovered yet."""
        return [str(r["task"]) for r in self._read("SELECT task FROM task_state WHERE flagged = 1")]

    def record_outcome(
        self, task: str, status: str, run_id: str, *, threshold: int = DEFAULT_THRESHOLD
    ) -> StreakChange:
        """Move the task's failure streak (and its trigger's) by a finished run's status.

        The returned change says whether this run crossed the threshold (`failure-streak`,
        once per streak) or ended a flagged streak (`recovery`); see core/streak.py.
        """
        with self._write() as db:
            db.execute("INSERT INTO task_state (task) VALUES (?) ON CONFLICT DO NOTHING", (task,))
            row = db.execute(
                "SELECT failure_streak, flagged FROM task_state WHERE task = ?", (task,)
            ).fetchone()
            streak, flagged, event = next_streak(
                row["failure_streak"], bool(row["flagged"]), status, threshold
            )
            db.execute(
                """UPDATE task_state SET failure_streak = ?, flagged = ?,
                       last_success_run = CASE WHEN ? THEN ? ELSE last_success_run END,
                       last_failure_run = CASE WHEN ? THEN ? ELSE last_failure_run END
                   WHERE task = ?""",
                (
                    streak,
                    int(flagged),
                    status == "succeeded",
                    run_id,
                    status in FAILURE_STATUSES,
                    run_id,
                    task,
                ),
            )
            trig = db.execute("SELECT trigger_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            if trig is not None and trig["trigger_id"] is not None:
                self._record_trigger_outcome(db, task, trig["trigger_id"], status, threshold)
            return StreakChange(streak, flagged, event)

    def _record_trigger_outcome(
        self, db: sqlite3.Connection, task: str, trigger_id: str, status: str, threshold: int
    ) -> None:
        db.execute(
            "INSERT INTO trigger_state (task, trigger_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (task, trigger_id),
        )
        row = db.execute(
            "SELECT failure_streak, flagged FROM trigger_state WHERE task = ? AND trigger_id = ?",
            (task, trigger_id),
        ).fetchone()
        streak, flagged, _ = next_streak(
            row["failure_streak"], bool(row["flagged"]), status, threshold
        )
        db.execute(
            "UPDATE trigger_state SET failure_streak = ?, flagged = ? "
            "WHERE task = ? AND trigger_id = ?",
            (streak, int(flagged), task, trigger_id),
        )

    # -- webhook tokens -----------------------------------------------------------------

    def issue_token(self, task: str, trigger_id: str, *, now: datetime | None = None) -> str:
        """The active token of a webhook trigger, made (192 random bits) if it has none."""
        now = _now(now)
        with self._write() as db:
            row = db.execute(
                "SELECT token FROM webhook_tokens "
                "WHERE task = ? AND trigger_id = ? AND revoked_at IS NULL",
                (task, trigger_id),
            ).fetchone()
            if row is not None:
                return str(row["token"])
            return self._insert_token(db, task, trigger_id, now)

    def rotate_token(self, task: str, trigger_id: str, *, now: datetime | None = None) -> str:
        """Revoke the trigger's active token (its URL stops working) and issue a new one."""
        now = _now(now)
        with self._write() as db:
            db.execute(
                "UPDATE webhook_tokens SET revoked_at = ? "
                "WHERE task = ? AND trigger_id = ? AND revoked_at IS NULL",
                (_stamp(now), task, trigger_id),
            )
            return self._insert_token(db, task, trigger_id, now)

    def _insert_token(
        self, db: sqlite3.Connection, task: str, trigger_id: str, now: datetime
    ) -> str:
        token = secrets.token_urlsafe(24)
        db.execute(
            "INSERT INTO webhook_tokens (token_hash, task, trigger_id, token, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (_token_hash(token), task, trigger_id, token, _stamp(now)),
        )
        return token

    def revoke_tokens(
        self, task: str, trigger_id: str | None = None, *, now: datetime | None = None
    ) -> int:
        """Revoke the active tokens of a task (or of one trigger); returns how many."""
        sql = "UPDATE webhook_tokens SET revoked_at = ? WHERE task = ? AND revoked_at IS NULL"
        params: list[Any] = [_stamp(_now(now)), task]
        if trigger_id is not None:
            sql += " AND trigger_id = ?"
            params.append(trigger_id)
        with self._write() as db:
            return db.execute(sql, params).rowcount

    def lookup_token(self, token: str) -> tuple[str, str] | None:
        """The (task, trigger_id) an active token belongs to; None if unknown or revoked.

        Found through its SHA-256 (an index lookup that reveals nothing about the token
        through timing), then compared in constant time.
        """
        rows = self._read(
            "SELECT task, trigger_id, token FROM webhook_tokens "
            "WHERE token_hash = ? AND revoked_at IS NULL",
            (_token_hash(token),),
        )
        if not rows:
            return None
        row = rows[0]
        if not hmac.compare_digest(row["token"].encode("utf-8"), token.encode("utf-8")):
            return None
        return str(row["task"]), str(row["trigger_id"])

    # -- webhook deliveries -------------------------------------------------------------

    def remember_delivery(
        self, task: str, delivery_id: str, run_id: str, *, now: datetime | None = None
    ) -> str | None:
        """Remember that a delivery started `run_id`; if it was seen before, its run id.

        `create_run(..., delivery_id=...)` does this in the run's own transaction.
        """
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO deliveries (task, delivery_id, run_id, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (task, delivery_id, run_id, _stamp(_now(now))),
            )
            if cur.rowcount:
                return None
            row = db.execute(
                "SELECT run_id FROM deliveries WHERE task = ? AND delivery_id = ?",
                (task, delivery_id),
            ).fetchone()
            return str(row["run_id"])

    def delivery_run(self, task: str, delivery_id: str) -> str | None:
        """The run id a remembered delivery started, or None."""
        rows = self._read(
            "SELECT run_id FROM deliveries WHERE task = ? AND delivery_id = ?",
            (task, delivery_id),
        )
        return str(rows[0]["run_id"]) if rows else None
