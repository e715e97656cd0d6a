"""`ThreadWriter.submit_now`: a scheduled fire's row committed in the loop's thread when
that needs no waiting, and queued for the writer thread otherwise, never out of order.

Real SQLite files; the lock held by another connection is real (SQLITE_BUSY at once).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daycare_cli.core.errors import NotFoundError
from daycare_cli.store import writes
from daycare_cli.store.state import State
from daycare_cli.store.writer import WAL_AUTOCHECKPOINT, ThreadWriter

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def kinds(db_path: Path) -> list[str]:
    with State.open(db_path) as st:
        return [e.kind for e in st.list_events(limit=None)]


def test_an_idle_writer_commits_at_once_in_the_callers_thread(db_path: Path) -> None:
    async def main() -> tuple[bool, list[str], int, int, int]:
        writer = ThreadWriter(db_path)
        writer.start()
        future = writer.submit_now(writes.add_event("schedule", "fired", now=T0))
        done = future.done()  # no loop turn, no thread: committed already
        seen = kinds(db_path)  # and visible to another connection
        assert writer._db is not None
        busy = writer._db.execute("PRAGMA busy_timeout").fetchone()[0]
        autockpt = writer._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        await future
        committed = writer.committed_now
        await writer.close()
        return done, seen, committed, busy, autockpt

    done, seen, committed, busy, autockpt = asyncio.run(main())
    assert done and seen == ["fired"] and committed == 1
    # The thread's connection has its own settings back: it waits for locks and checkpoints.
    assert busy == 5000 and autockpt == WAL_AUTOCHECKPOINT


def test_writes_already_queued_go_first(db_path: Path) -> None:
    async def main() -> tuple[bool, int]:
        writer = ThreadWriter(db_path)
        writer.start()
        for i in range(3):
            writer.post(writes.add_event("daemon", f"posted.{i}", now=T0), "an event")
        future = writer.submit_now(writes.add_event("schedule", "fired", now=T0))
        queued = not future.done()
        await future
        await writer.close()
        return queued, writer.committed_now

    queued, committed = asyncio.run(main())
    assert queued and committed == 0
    assert kinds(db_path) == ["posted.0", "posted.1", "posted.2", "fired"]


def test_a_lock_held_elsewhere_never_makes_the_caller_wait(db_path: Path) -> None:
    """Another process holds the write lock: the row goes to the thread at once (which
    waits for the lock, off the loop) and lands once the lock is free."""

    async def main() -> tuple[bool, bool, bool, int]:
        writer = ThreadWriter(db_path)
        writer.start()
        other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        before = loop.time()
        future = writer.submit_now(writes.add_event("schedule", "fired", now=T0))
        returned_at_once = loop.time() - before < 1.0  # the busy timeout is 5 s
        pending = not future.done()
        other.execute("ROLLBACK")
        other.close()
        await asyncio.wait_for(future, 10)
        healthy = writer.healthy
        await writer.close()
        return returned_at_once, pending, healthy, writer.committed_now

    returned_at_once, pending, healthy, committed = asyncio.run(main())
    assert returned_at_once and pending and healthy and committed == 0
    assert kinds(db_path) == ["fired"]


def test_a_transactions_own_error_fails_its_future_alone(db_path: Path) -> None:
    async def main() -> tuple[Any, bool, bool]:
        writer = ThreadWriter(db_path)
        writer.start()
        bad = writer.submit_now(writes.finish_run("no-such-run", status="failed", now=T0))
        failure = bad.exception() if bad.done() else None
        good = writer.submit_now(writes.add_event("schedule", "after", now=T0))
        ok = good.done() and isinstance(good.result(), int)
        await writer.close()
        return failure, ok, writer.healthy

    failure, ok, healthy = asyncio.run(main())
    assert isinstance(failure, NotFoundError)  # rolled back, nothing of it written
    assert ok and healthy
    assert kinds(db_path) == ["after"]


def test_a_failing_writer_takes_every_write_in_order(db_path: Path) -> None:
    """While writes fail (here: the lock, past a short busy timeout), `submit_now`
    queues: nothing jumps ahead of what waits for the retry."""

    async def main() -> list[str]:
        writer = ThreadWriter(db_path, busy_timeout=0.1)
        writer.start()
        other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        first = writer.submit(writes.add_event("daemon", "first", now=T0))
        while writer.healthy:
            await asyncio.sleep(0.01)
        other.execute("ROLLBACK")  # free now, but the writer still counts as failing
        second = writer.submit_now(writes.add_event("schedule", "second", now=T0))
        assert not second.done()
        other.close()
        await asyncio.wait_for(asyncio.gather(first, second), 15)
        await writer.close()
        return kinds(db_path)

    assert asyncio.run(main()) == ["first", "second"]
