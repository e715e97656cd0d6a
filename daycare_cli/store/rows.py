"""The rows of the state database as values: runs, events, trigger and task state.

Also the vocabulary the rows use (triggers, statuses, actors) and how their times are
stored: UTC ISO 8601 text with an explicit `+00:00` offset (fixed width, so text order is
time order), read back as aware datetimes. docs/state-schema.md describes every column.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


# --- times ----------------------------------------------------------------------------


def aware_now(now: datetime | None) -> datetime:
    """`now`, or the current time when None; a naive datetime is refused."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got naive {now.isoformat()}")
    return now


def stamp(dt: datetime) -> str:
    """A recorded time as stored: UTC, microseconds, `+00:00`; fixed width sorts as text.

    Microseconds, as slots keep them (an `every` anchor is an instant of the daemon's
    start): a time cut to milliseconds could read as earlier than the slot it is late for.
    Rows written with milliseconds (before m004) still sort right against these.
    """
    return aware_now(dt).astimezone(UTC).isoformat(timespec="microseconds")


def slot_text(slot: datetime | str | None) -> str | None:
    """A slot as stored: the UTC instant in ISO 8601, so one instant has one spelling."""
    if slot is None:
        return None
    value = datetime.fromisoformat(slot) if isinstance(slot, str) else slot
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"slot must be an aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC).isoformat()


def parse_time(text: str | None) -> datetime | None:
    """A stored time (or NULL) as an aware datetime (or None)."""
    return None if text is None else datetime.fromisoformat(text)


def duration_ms(started_at: str | None, now: datetime) -> int | None:
    """Milliseconds from a stored start to `now`, both at the stored precision."""
    if started_at is None:
        return None
    elapsed = datetime.fromisoformat(stamp(now)) - datetime.fromisoformat(started_at)
    return max(0, round(elapsed.total_seconds() * 1000))


def select(table: str, conditions: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """`SELECT * FROM table` with a WHERE of the conditions whose value is not None
    (`("task = ?", "backup")`), and their parameters."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    query = f"SELECT * FROM {table}"
    if used:
        query += " WHERE " + " AND ".join(sql for sql, _ in used)
    return query, [value for _, value in used]


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


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
    payload: bytes | None = None  # a queued webhook run's body, until it starts; not in JSON
    block_started_at: datetime | None = None  # when its first block was spawned

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
            slot=parse_time(row["slot"]),
            attempt=row["attempt"],
            status=row["status"],
            queued_at=datetime.fromisoformat(row["queued_at"]),
            started_at=parse_time(row["started_at"]),
            finished_at=parse_time(row["finished_at"]),
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
            payload=row["payload"],
            block_started_at=parse_time(row["block_started_at"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of `runs ls/show --json` and `task run --json` (docs/cli.md)."""
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
            "block_started_at": _iso(self.block_started_at),
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
            last_slot=parse_time(row["last_slot"]),
            last_fire_at=parse_time(row["last_fire_at"]),
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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskState:
        """A TaskState from a `SELECT * FROM task_state` row."""
        return cls(
            task=row["task"],
            failure_streak=row["failure_streak"],
            flagged=bool(row["flagged"]),
            last_success_run=row["last_success_run"],
            last_failure_run=row["last_failure_run"],
        )
