"""The daemon's one writer of state.db: a thread with group commit, retries and a health flag.

The daemon builds its writes as transactions (`writes.py`) and hands them here. One
thread owns a connection of its own and commits whatever has queued up in one write
transaction (group commit; a transaction that raises fails alone, the others are
committed without it), and hands the results back to the event loop. The loop never
waits on the disk: it awaits a future, or does not wait at all (`post`). One write may
be committed on the loop's thread, in the thread's turn: a scheduled fire's row, when
nothing waits and nothing needs waiting for (`submit_now`; docs/architecture.md).

When a commit fails for a reason outside the transaction (disk full, read-only file,
the database locked past the busy timeout, an I/O error), nothing is lost: the batch
goes back to the head of the queue and is tried again with backoff, and what queued
meanwhile waits behind it. `healthy`, `last_error` and `failing_since` say so to
whoever supervises the daemon; once writes work again everything waiting is committed
in order. If they do not work again within `retry_limit` seconds, if the queue grows
past `max_pending`, or if state.db is deleted or replaced under the daemon (its writes
would go to a file no other process sees), the writer gives up: `fatal` says why and
`on_fatal` is called on the loop, and the daemon exits non-zero so its supervisor
(systemd) restarts it.

The interface it shares with `InlineWriter` (commits at once in the caller's thread: the
CLI's runner, and the scheduler in virtual-time tests, use it) is `StateWriter`, in
`writing.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from daycare_cli.store.database import BUSY_TIMEOUT_MS, StateLost, describe, is_fault, opening
from daycare_cli.store.writes import Transaction

log = logging.getLogger("daycare.state")

T = TypeVar("T")

RETRY_LIMIT = 300.0  # seconds of failing writes before the daemon gives up (config)
MAX_BATCH = 64  # transactions in one commit (a bound on the wait for a commit)
MAX_PENDING = 100_000  # transactions waiting before the writer gives up (memory bound)
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0
STALL_AFTER = 2.0  # a commit taking longer than this (a lock held elsewhere) is unhealthy
CHECK_EVERY = 2.0  # an idle writer still looks whether state.db was deleted this often
LOG_EVERY = 60.0  # while writes fail, one log line a minute
WAL_AUTOCHECKPOINT = 1000  # pages: SQLite's default, restored after a `submit_now`


class WriterClosed(RuntimeError):
    """The writer stopped before this transaction was committed."""


class _Deferred(Exception):
    """`submit_now` could not commit at once (locked, a fault): the thread will."""


@dataclass
class _Item:
    transaction: Transaction[Any]
    future: asyncio.Future[Any] | None  # None: posted, nobody waits for it
    what: str


class ThreadWriter:
    """The daemon's writer thread; see the module docstring. Use from the event loop only."""

    def __init__(
        self,
        db_path: Path,
        *,
        retry_limit: float = RETRY_LIMIT,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
        on_fatal: Callable[[str], None] | None = None,
        busy_timeout: float | None = None,
    ) -> None:
        self.path = Path(db_path)
        self.retry_limit = retry_limit
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_fatal = on_fatal
        self.busy_timeout = busy_timeout  # None: the store's (5 s)
        # Health, written by the thread and read from the loop (single attribute reads).
        self.last_error: str | None = None  # why the last attempt failed, while failing
        self.failing_since: datetime | None = None
        self.fatal: str | None = None
        self._committing_since: float | None = None  # monotonic start of the commit in hand
        self.commits = 0  # write transactions committed (each holding one or more writes)
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = False
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._lost = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # One committer at a time, in queue order: the thread, or `submit_now` on the loop.
        self._turn = threading.Lock()
        self.committed_now = 0  # transactions `submit_now` committed in the loop's thread

    # -- the loop's side ----------------------------------------------------------------

    def start(self) -> None:
        """Open the writer's connection and start its thread (call from the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._db = self._connect()
        self._thread = threading.Thread(target=self._main, name="state-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Transactions queued and not yet committed."""
        return len(self._queue)

    @property
    def stalled(self) -> float | None:
        """Seconds the commit in hand has taken, once over STALL_AFTER (a lock held
        elsewhere, a hung disk); else None."""
        since = self._committing_since
        if since is None:
            return None
        seconds = time.monotonic() - since
        return seconds if seconds > STALL_AFTER else None

    @property
    def healthy(self) -> bool:
        """Writes work: none failing or stuck, and the writer has not given up."""
        return self.fatal is None and self.failing_since is None and self.stalled is None

    def health(self) -> dict[str, Any]:
        """`{"healthy": bool, "error": str | None}`: the `state` part of the daemon's status."""
        if self.fatal is not None:
            return {"healthy": False, "error": self.fatal}
        if self.failing_since is not None:
            seconds = (datetime.now(UTC) - self.failing_since).total_seconds()
            error = (
                f"state.db writes failing for {seconds:.0f}s ({self.last_error}); "
                f"{self.pending} write(s) waiting, retried until {self.retry_limit:g}s"
            )
            return {"healthy": False, "error": error}
        stalled = self.stalled
        if stalled is not None:
            error = (
                f"a write to state.db has been waiting {stalled:.0f}s "
                f"(another process may hold its lock); {self.pending} more waiting"
            )
            return {"healthy": False, "error": error}
        return {"healthy": True, "error": None}

    def submit(self, transaction: Transaction[T]) -> asyncio.Future[T]:
        assert self._loop is not None, "ThreadWriter.start() first"
        future: asyncio.Future[T] = self._loop.create_future()
        self._put(_Item(transaction, future, ""))
        return future

    def post(self, transaction: Transaction[Any], what: str, *, wake_later: bool = False) -> None:
        self._put(_Item(transaction, None, what), wake=not wake_later)
        if wake_later and self._loop is not None:
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    async def commit(self, transaction: Transaction[T]) -> T:
        return await self.submit(transaction)

    def submit_now(self, transaction: Transaction[T]) -> asyncio.Future[T]:
        """Commit `transaction` at once in the loop's thread when the writer is idle and
        healthy and nothing else holds state.db's write lock; otherwise queue it.

        For the one write a scheduled fire waits on, its row: through the thread, its
        commit waits for the GIL twice, 1.5 ms at the median and 5-10 ms at p99 on a busy
        machine (bench/RESULTS.md). Here it never waits: another process's lock fails it
        at once (no busy timeout) and it goes to the queue, as does any fault (the thread
        retries and reports it). A WAL commit with `synchronous=NORMAL` appends to the log
        without fsync, and no checkpoint runs here (the thread's next commit runs it):
        ~0.1 ms. Queue order holds: it runs only with the queue empty, in the thread's turn.
        """
        assert self._loop is not None, "ThreadWriter.start() first"
        if self._queue or self._closing or self._lost or not self.healthy:
            return self.submit(transaction)
        if not self._turn.acquire(blocking=False):
            return self.submit(transaction)  # the thread is committing
        try:
            value = self._commit_now(transaction)
        except _Deferred:
            return self.submit(transaction)
        except Exception as exc:  # the transaction's own failure, as in a batch
            future: asyncio.Future[T] = self._loop.create_future()
            future.set_exception(exc)
            return future
        finally:
            self._turn.release()
        self.committed_now += 1
        future = self._loop.create_future()
        future.set_result(value)
        return future

    def _commit_now(self, transaction: Transaction[T]) -> T:
        """`transaction` in one write transaction, in the caller's thread, on the thread's
        connection (its turn is ours: one cache, kept warm; a second connection would
        read its pages anew after each of the thread's commits, 3x the time). Raises
        _Deferred when it could not be tried (locked, a fault, the file gone)."""
        db = self._db
        if db is None:
            raise _Deferred
        try:
            self._check_file()
            # Never wait for another process's lock, never checkpoint here (the copy and
            # its fsync are the thread's, at its next commit).
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA wal_autocheckpoint = 0")
            db.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, OSError, StateLost) as exc:
            self._restore_pragmas(db)
            raise _Deferred from exc
        try:
            value = transaction(db)
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            if is_fault(exc) or isinstance(exc, sqlite3.OperationalError):
                raise _Deferred from exc
            raise
        finally:
            self._restore_pragmas(db)
        return value

    def _restore_pragmas(self, db: sqlite3.Connection) -> None:
        busy = BUSY_TIMEOUT_MS if self.busy_timeout is None else int(self.busy_timeout * 1000)
        with contextlib.suppress(sqlite3.Error):
            db.execute(f"PRAGMA busy_timeout = {busy}")
            db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")

    def _put(self, item: _Item, *, wake: bool = True) -> None:
        if self._lost or (self._closing and self._thread is None):
            self._fail_item(item, WriterClosed(self.fatal or "the state writer is closed"))
            return
        with self._cond:
            self._queue.append(item)
            if wake and len(self._queue) == 1:
                self._cond.notify()
        if len(self._queue) > self.max_pending and self.fatal is None:
            self._give_up(
                f"{len(self._queue)} writes to state.db are waiting (at most "
                f"{self.max_pending}): {self.last_error or 'the disk is too slow'}"
            )

    async def close(self, timeout: float = 10.0) -> int:
        """Commit what is queued (trying for up to `timeout` s), then stop the thread.

        Returns how many transactions could not be committed; their futures fail with
        `WriterClosed`.
        """
        with self._cond:
            self._closing = True
            # Given up (or the file is gone): nothing more will be written, do not wait.
            self._abandon = self._lost or self.fatal is not None
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 0.5 if self._abandon else timeout)
            if thread.is_alive() and not self._abandon:
                with self._cond:
                    self._abandon = True
                    self._cond.notify()
                # A commit in progress ends within the busy timeout.
                await asyncio.to_thread(thread.join, 10.0)
        self._thread = None
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        self._fail_all(left, WriterClosed("the daemon stopped before they were written"))
        if self._db is not None and (thread is None or not thread.is_alive()):
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        return len(left)

    def _drop_waiting(self) -> None:
        """Fail everything queued (state.db is lost: none of it can ever be written)."""
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        self._fail_all(left, WriterClosed(self.fatal or "state.db was lost"))

    def _fail_all(self, items: list[_Item], exc: BaseException) -> None:
        """Fail items that will never be committed; one log line says how many."""
        for item in items:
            self._fail_item(item, exc, quiet=True)
        if items:
            log.error("%d change(s) to state.db were not recorded: %s", len(items), exc)

    def _fail_item(self, item: _Item, exc: BaseException, *, quiet: bool = False) -> None:
        if item.future is not None:
            if not item.future.done():
                item.future.set_exception(exc)
                item.future.exception()  # retrieved: nobody may be waiting any more
        elif item.what and not quiet:
            log.error("not recorded: %s (%s)", item.what, exc)

    def _resolve(self, batch: list[_Item], outcomes: list[tuple[bool, Any]]) -> None:
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.future is None:
                if not ok:
                    log.error("could not record %s: %s", item.what or "a change", describe(value))
            elif not item.future.done():  # a waiter that was cancelled no longer listens
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    def _give_up(self, reason: str) -> None:
        """Say the writer cannot go on; the daemon exits non-zero (called in any thread)."""
        if self.fatal is not None:
            return
        self.fatal = reason
        log.critical("giving up on state.db: %s", reason)
        if self.on_fatal is not None:
            self._call_soon(self.on_fatal, reason)

    # -- the thread's side --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Never create the file anew here: a missing state.db is a lost one.
        self._check_file()
        with opening(self.path, create=False) as db:
            if self.busy_timeout is not None:
                db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        st = os.stat(self.path)
        if self._identity is None:
            self._identity = (st.st_dev, st.st_ino)
        return db

    def _check_file(self) -> None:
        """Raise StateLost when the path no longer names the file the daemon opened."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StateLost(f"{self.path} was deleted while the daemon was running") from None
        if self._identity is not None and (st.st_dev, st.st_ino) != self._identity:
            raise StateLost(f"{self.path} was replaced by another file while the daemon ran")

    def _main(self) -> None:
        backoff = BACKOFF_FIRST
        last_log = 0.0
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(CHECK_EVERY)
                if self._abandon or (self._closing and not self._queue):
                    return
            outcomes: list[tuple[bool, Any]] = []
            failure: Exception | None = None
            with self._turn:  # `submit_now` commits nothing meanwhile
                with self._cond:
                    size = min(self.max_batch, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(size)]
                attempt_started = datetime.now(UTC)
                try:
                    self._check_file()
                    outcomes = self._commit(batch) if batch else []
                except Exception as exc:
                    failure = exc
                    with self._cond:
                        self._queue.extendleft(reversed(batch))
            if failure is not None:
                if isinstance(failure, StateLost):
                    self._lost = True  # never write to an orphan: stop for good
                    self.last_error = describe(failure)
                    self._give_up(f"{describe(failure)}; restart the daemon to use the new file")
                    self._call_soon(self._drop_waiting)
                    return
                last_log = self._failed(failure, last_log, attempt_started)
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            if self.failing_since is not None:
                self._recovered(len(batch))
            if batch:
                self.commits += 1
                self._call_soon(self._resolve, batch, outcomes)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    def _wait(self, seconds: float) -> None:
        with self._cond:
            if not self._abandon:
                self._cond.wait(seconds)

    def _commit(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        """Run the batch in one write transaction; the outcome of each item, in order.

        An item that raises for its own reasons fails alone: the transaction is rolled
        back and the batch run again without it (rare, so no savepoint per item). A
        fault of the disk or the file raises: the whole batch is rolled back, to be
        tried again.
        """
        if self._db is None:
            self._db = self._connect()
        db = self._db
        failed: dict[int, Exception] = {}
        self._committing_since = time.monotonic()
        try:
            while True:
                values: dict[int, Any] = {}
                db.execute("BEGIN IMMEDIATE")
                try:
                    for index, item in enumerate(batch):
                        if index not in failed:
                            values[index] = item.transaction(db)
                except Exception as exc:
                    if is_fault(exc):
                        raise
                    failed[index] = exc
                    db.execute("ROLLBACK")
                    continue
                db.execute("COMMIT")
                break
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (
                10,
                14,
            ):
                # An I/O error or a file that cannot be opened: start over with a fresh
                # connection on the next try.
                with contextlib.suppress(sqlite3.Error):
                    db.close()
                self._db = None
            raise
        finally:
            self._committing_since = None
        return [
            (False, failed[index]) if index in failed else (True, values[index])
            for index in range(len(batch))
        ]

    def _failed(self, exc: Exception, last_log: float, attempt_started: datetime) -> float:
        """Record a failed attempt; log the first and then one line a minute.

        Writes have failed since the first failing attempt began (a locked database
        fails only after the busy timeout).
        """
        message = describe(exc)
        now = time.monotonic()
        first = self.failing_since is None
        if first:
            self.failing_since = attempt_started
        self.last_error = message
        if first or now - last_log >= LOG_EVERY:
            assert self.failing_since is not None
            seconds = (datetime.now(UTC) - self.failing_since).total_seconds()
            log.error(
                "cannot write state.db: %s; %d write(s) waiting, retrying "
                "(failing for %.0fs; the daemon exits after %gs)",
                message,
                len(self._queue),
                seconds,
                self.retry_limit,
            )
            last_log = now
        if not self._closing and self.failing_since is not None:
            seconds = (datetime.now(UTC) - self.failing_since).total_seconds()
            if seconds > self.retry_limit:
                self._give_up(
                    f"writes to state.db failed for {seconds:.0f}s "
                    f"(daemon.state_retry_limit = {self.retry_limit:g}): {message}"
                )
        return last_log

    def _recovered(self, committed: int) -> None:
        assert self.failing_since is not None
        seconds = (datetime.now(UTC) - self.failing_since).total_seconds()
        log.warning(
            "state.db writes work again after %.1fs; the %d waiting write(s) are being recorded",
            seconds,
            committed + len(self._queue),
        )
        self.failing_since = None
        self.last_error = None
