"""The audit ledger (`events`): append an event, read events back.

Functions over a connection: a write runs inside the caller's transaction (see
`State._write`), so an event can share the commit of the change it records.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from daycare_cli.store.rows import ACTORS, Event, select, stamp

Ledger = tuple[str, str, "dict[str, Any] | None"]  # (actor, kind, detail) of an event


def insert_event(
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
        (stamp(now), actor, kind, task, run, text),
    )
    return int(cur.lastrowid or 0)


def list_events(
    db: sqlite3.Connection,
    task: str | None,
    limit: int | None,
    since_id: int | None,
    run: str | None,
) -> list[Event]:
    """Events oldest first: the newest `limit`, or the first `limit` after `since_id`."""
    sql, params = select("events", [("task = ?", task), ("run = ?", run), ("id > ?", since_id)])
    sql += " ORDER BY id" if since_id is not None else " ORDER BY id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    events = [Event.from_row(row) for row in db.execute(sql, params).fetchall()]
    return events if since_id is not None else events[::-1]
