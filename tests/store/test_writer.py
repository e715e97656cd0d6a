"""The daemon's writer thread: group commit, a bad transaction failing alone, faults of the
disk or the lock retried until writes work again, health while they fail, giving up.

Real SQLite files in a temp dir; the faults are real too: another connection holding the
write lock (SQLITE_BUSY), a full tmpfs (SQLITE_FULL, as root), the file deleted.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daycare_cli.core.errors import NotFoundError
from daycare_cli.store import writes
from daycare_cli.store.database import is_fault
from daycare_cli.store.state import State
from daycare_cli.store.writer import ThreadWriter, WriterClosed

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def lock_holder(db_path: Path) -> sqlite3.Connection:
    """Another connection that takes the write lock and keeps it until closed."""
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    return other


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_burst_is_committed_in_few_transactions_in_order(db_path: Path) -> None:
    async def main() -> tuple[list[int], int]:
        writer = ThreadWriter(db_path)
        writer.start()
        futures = [
            writer.submit(writes.add_event("daemon", f"burst.{i}", now=T0)) for i in range(300)
        ]
        ids = list(await asyncio.gather(*futures))
        commits = writer.commits
        assert await writer.close() == 0
        return ids, commits

    ids, commits = asyncio.run(main())
    assert ids == sorted(ids) and len(set(ids)) == 300  # committed in submission order
    assert commits < 300  # group commit: many writes share a transaction
    with State.open(db_path) as st:
        kinds = [e.kind for e in st.list_events(limit=None)]
    assert kinds == [f"burst.{i}" for i in range(300)]


def test_a_failing_transaction_fails_alone(db_path: Path) -> None:
    async def main() -> list[Any]:
        writer = ThreadWriter(db_path)
        writer.start()
        # Submitted together, so they share one commit.
        first = writer.submit(writes.add_event("daemon", "before", now=T0))
        bad = writer.submit(writes.finish_run("no-such-run", status="failed", now=T0))
        last = writer.submit(writes.add_event("daemon", "after", now=T0))
        results = await asyncio.gather(first, bad, last, return_exceptions=True)
        assert writer.healthy
        await writer.close()
        return results

    first, bad, last = asyncio.run(main())
    assert isinstance(bad, NotFoundError)
    assert isinstance(first, int) and isinstance(last, int)
    with State.open(db_path) as st:
        assert [e.kind for e in st.list_events(limit=None)] == ["before", "after"]


def test_a_locked_database_is_unhealthy_then_everything_waiting_is_written(
    db_path: Path,
) -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> list[int]:
        writer = ThreadWriter(db_path, busy_timeout=0.2)
        writer.start()
        other = lock_holder(db_path)
        futures = [writer.submit(writes.add_event("daemon", f"e{i}", now=T0)) for i in range(3)]
        await until(lambda: not writer.healthy)
        seen.append(writer.health())
        # More writes queue behind while it fails; none is lost or reordered.
        futures += [writer.submit(writes.add_event("daemon", f"e{i}", now=T0)) for i in (3, 4)]
        await asyncio.sleep(0.5)
        seen.append(writer.health())
        assert not any(f.done() for f in futures)
        other.execute("ROLLBACK")
        other.close()
        ids = list(await asyncio.wait_for(asyncio.gather(*futures), 15))
        seen.append(writer.health())
        await writer.close()
        return ids

    ids = asyncio.run(main())
    assert ids == sorted(ids)
    assert [h["healthy"] for h in seen] == [False, False, True]
    error = seen[1]["error"]
    assert "locked" in error and "waiting" in error
    assert seen[2]["error"] is None
    with State.open(db_path) as st:
        assert [e.kind for e in st.list_events(limit=None)] == [f"e{i}" for i in range(5)]


def test_a_lock_held_past_the_retry_limit_gives_up(db_path: Path) -> None:
    reasons: list[str] = []

    async def main() -> tuple[int, BaseException | None]:
        writer = ThreadWriter(db_path, busy_timeout=0.1, retry_limit=0.5, on_fatal=reasons.append)
        writer.start()
        other = lock_holder(db_path)
        future = writer.submit(writes.add_event("daemon", "never", now=T0))
        await until(lambda: bool(reasons))
        assert not writer.healthy
        assert writer.health()["error"] == writer.fatal
        left = await writer.close(timeout=0.5)
        other.close()
        return left, future.exception()

    left, exc = asyncio.run(main())
    assert left == 1
    assert isinstance(exc, WriterClosed)
    [reason] = reasons
    assert "failed for" in reason and "daemon.state_retry_limit" in reason
    with State.open(db_path) as st:
        assert st.list_events(limit=None) == []


def test_a_deleted_database_is_reported_and_never_written_to(db_path: Path) -> None:
    reasons: list[str] = []

    async def main() -> BaseException | None:
        writer = ThreadWriter(db_path, on_fatal=reasons.append)
        writer.start()
        await writer.commit(writes.add_event("daemon", "before", now=T0))
        for suffix in ("", "-wal", "-shm"):
            Path(str(db_path) + suffix).unlink(missing_ok=True)
        future = writer.submit(writes.add_event("daemon", "after", now=T0))
        await until(lambda: bool(reasons))
        await writer.close(timeout=0.5)
        return future.exception()

    exc = asyncio.run(main())
    assert isinstance(exc, WriterClosed)
    [reason] = reasons
    assert str(db_path) in reason and "deleted" in reason
    assert not db_path.exists()  # not created again behind the CLI's back


def test_an_idle_writer_notices_a_replaced_database(db_path: Path, tmp_path: Path) -> None:
    reasons: list[str] = []

    async def main() -> None:
        writer = ThreadWriter(db_path, on_fatal=reasons.append)
        writer.start()
        other = tmp_path / "other.db"
        State.open(other).close()
        os.replace(other, db_path)
        await until(lambda: bool(reasons), timeout=10)  # without any write to trigger it
        await writer.close(timeout=0.5)

    asyncio.run(main())
    assert "replaced" in reasons[0]


def test_too_many_waiting_writes_give_up(db_path: Path) -> None:
    reasons: list[str] = []

    async def main() -> None:
        writer = ThreadWriter(db_path, busy_timeout=0.1, max_pending=20, on_fatal=reasons.append)
        writer.start()
        other = lock_holder(db_path)
        for i in range(40):
            writer.post(writes.add_event("daemon", f"e{i}", now=T0), "an event")
        await until(lambda: bool(reasons))
        await writer.close(timeout=0.2)
        other.close()

    asyncio.run(main())
    assert "writes to state.db are waiting" in reasons[0]


def test_faults_are_told_from_bad_transactions() -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    syntax = sqlite3.OperationalError("near 'x': syntax error")
    syntax.sqlite_errorcode = 1  # type: ignore[attr-defined]
    assert is_fault(busy) and is_fault(full) and is_fault(OSError(28, "No space left"))
    assert not is_fault(syntax)
    assert not is_fault(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_fault(ValueError("bad"))


# --- a full disk (root: a small tmpfs) ------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros to `path` until the file system is full."""
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_is_retried_and_the_waiting_writes_land_once_space_is_back(
    small_disk: Path,
) -> None:
    db_path = small_disk / "state.db"
    State.open(db_path).close()
    big = "x" * 200_000  # each event grows the WAL by ~50 pages

    async def main() -> list[dict[str, Any]]:
        writer = ThreadWriter(db_path)
        writer.start()
        await writer.commit(writes.add_event("daemon", "before", now=T0))
        filler = small_disk / "filler"
        fill(filler)
        futures = [
            writer.submit(writes.add_event("daemon", f"e{i}", detail={"x": big}, now=T0))
            for i in range(5)
        ]
        await until(lambda: not writer.healthy)
        seen = [writer.health()]
        filler.unlink()
        await asyncio.wait_for(asyncio.gather(*futures), 20)
        seen.append(writer.health())
        await writer.close()
        return seen

    seen = asyncio.run(main())
    assert seen[0]["healthy"] is False and "full" in seen[0]["error"]
    assert seen[1] == {"healthy": True, "error": None}
    with State.open(db_path) as st:
        kinds = [e.kind for e in st.list_events(limit=None)]
    assert kinds == ["before"] + [f"e{i}" for i in range(5)]
