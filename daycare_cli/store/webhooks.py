"""Webhook tokens (`webhook_tokens`) and remembered deliveries (`deliveries`).

A token is stored in clear (so its URL can be printed again) and under its SHA-256, the
key it is looked up by. Functions over a connection: a write runs inside the caller's
transaction (see `State._write`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from datetime import datetime
from typing import Any

from daycare_cli.store.rows import stamp


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- tokens -------------------------------------------------------------------------------


def issue_token(db: sqlite3.Connection, task: str, trigger_id: str, now: datetime) -> str:
    """The active token of a webhook trigger, made if it has none."""
    row = db.execute(
        "SELECT token FROM webhook_tokens WHERE task = ? AND trigger_id = ? AND revoked_at IS NULL",
        (task, trigger_id),
    ).fetchone()
    if row is not None:
        return str(row["token"])
    return _insert_token(db, task, trigger_id, now)


def rotate_token(db: sqlite3.Connection, task: str, trigger_id: str, now: datetime) -> str:
    """Revoke the trigger's active token and issue a new one."""
    db.execute(
        "UPDATE webhook_tokens SET revoked_at = ? "
        "WHERE task = ? AND trigger_id = ? AND revoked_at IS NULL",
        (stamp(now), task, trigger_id),
    )
    return _insert_token(db, task, trigger_id, now)


def _insert_token(db: sqlite3.Connection, task: str, trigger_id: str, now: datetime) -> str:
    token = secrets.token_urlsafe(24)
    db.execute(
        "INSERT INTO webhook_tokens (token_hash, task, trigger_id, token, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (_token_hash(token), task, trigger_id, token, stamp(now)),
    )
    return token


def revoke_tokens(db: sqlite3.Connection, task: str, trigger_id: str | None, now: datetime) -> int:
    """Revoke the active tokens of a task (or of one trigger); returns how many."""
    sql = "UPDATE webhook_tokens SET revoked_at = ? WHERE task = ? AND revoked_at IS NULL"
    params: list[Any] = [stamp(now), task]
    if trigger_id is not None:
        sql += " AND trigger_id = ?"
        params.append(trigger_id)
    return db.execute(sql, params).rowcount


def lookup_token(db: sqlite3.Connection, token: str) -> tuple[str, str] | None:
    """The (task, trigger_id) an active token belongs to; None if unknown or revoked."""
    row = db.execute(
        "SELECT task, trigger_id, token FROM webhook_tokens "
        "WHERE token_hash = ? AND revoked_at IS NULL",
        (_token_hash(token),),
    ).fetchone()
    if row is None:
        return None
    if not hmac.compare_digest(row["token"].encode("utf-8"), token.encode("utf-8")):
        return None
    return str(row["task"]), str(row["trigger_id"])


# --- deliveries ---------------------------------------------------------------------------


def insert_delivery(
    db: sqlite3.Connection, task: str, delivery_id: str, run_id: str, now: datetime
) -> None:
    """Remember that a delivery started `run_id` (the delivery must be new)."""
    db.execute(
        "INSERT INTO deliveries (task, delivery_id, run_id, at) VALUES (?, ?, ?, ?)",
        (task, delivery_id, run_id, stamp(now)),
    )


def remember_delivery(
    db: sqlite3.Connection, task: str, delivery_id: str, run_id: str, now: datetime
) -> str | None:
    """Remember that a delivery started `run_id`; if it was seen before, its run id."""
    cur = db.execute(
        "INSERT INTO deliveries (task, delivery_id, run_id, at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (task, delivery_id, run_id, stamp(now)),
    )
    if cur.rowcount:
        return None
    return delivery_run(db, task, delivery_id)


def delivery_run(db: sqlite3.Connection, task: str, delivery_id: str) -> str | None:
    """The run id a remembered delivery started, or None."""
    row = db.execute(
        "SELECT run_id FROM deliveries WHERE task = ? AND delivery_id = ?", (task, delivery_id)
    ).fetchone()
    return None if row is None else str(row["run_id"])
