"""The SQLite file `state.db`: creating it private, connecting, its settings, its faults.

WAL, so readers never wait for the writer; `synchronous=NORMAL`; a busy timeout, so a
process waits for another's write lock instead of failing; autocommit mode, so the store
begins its own transactions (`BEGIN IMMEDIATE`). See docs/state-schema.md. `is_fault`
tells a failure of the disk or the file (worth retrying) from a wrong transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from daycare_cli.core.errors import UserError

BUSY_TIMEOUT_MS = 5000


class StateError(UserError):
    """The state database cannot be opened (unwritable home, not a database)."""

    exit_code = 1


# SQLite's primary result codes that mean "the disk or the file failed, try again later",
# not "this transaction is wrong": BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN,
# PROTOCOL.
FAULT_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_FAULT_WORDS = ("locked", "busy", "readonly", "disk", "full", "unable to open", "i/o")


class StateLost(RuntimeError):
    """state.db was deleted or replaced while the daemon had it open."""


def is_fault(exc: BaseException) -> bool:
    """True for a failure of the disk or the file (retry later), not of a transaction."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) in FAULT_CODES
        return any(word in str(exc).lower() for word in _FAULT_WORDS)
    return isinstance(exc, OSError | StateError | MemoryError)


def describe(exc: BaseException) -> str:
    """One line for a log or a status: what failed, without a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _create_private(db_path: Path) -> None:
    """Create the file 0600 (it holds webhook tokens), or tighten a looser mode."""
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


@contextlib.contextmanager
def opening(db_path: Path, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    """Open (creating if needed) the database at `db_path`, set up, for the caller to prepare.

    The connection is closed if the caller's block fails; a file that is not a SQLite
    database becomes a StateError saying so. With `create` False the file must exist, and
    it is never opened outside SQLite: closing any descriptor of the file drops every
    POSIX lock this process holds on it, so a second connection of a process that has one
    open already must not (another process would then delete the WAL under it).
    """
    if create:
        _create_private(db_path)
    uri = f"{db_path.resolve().as_uri()}?mode=rw"
    db = sqlite3.connect(
        db_path if create else uri,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
        uri=not create,
    )
    try:
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        yield db
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
