"""Where a scheduled fire's row is committed: on the event loop while the loop turn's budget
lasts (no thread hand-off: the fire starts at once), through the writer thread's group
commit after it (many fires due at once never hold the loop for long). The scheduler runs
in-process with the daemon's real writer thread, on real time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daycare_cli.config import load_config
from daycare_cli.daemon import scheduler as scheduler_module
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State
from daycare_cli.store.writer import ThreadWriter

TASKS = 30


def fire_all_at_once(tmp_path: Path) -> tuple[int, int, list[str]]:
    """TASKS one-off tasks due in the same instant; (rows committed on the loop, rows
    written, their statuses)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    at = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    for i in range(TASKS):
        (tasks / f"due-{i:02d}.md").write_text(
            f'---\ntriggers:\n  - at: "{at}"\nmodel: none\n---\nTick {i}.\n'
        )
    (tmp_path / "config.toml").write_text(f"max_concurrent_runs = {TASKS}\n")
    paths = Paths.resolve(home=tmp_path)

    async def main() -> tuple[int, int, list[str]]:
        state = State.open(paths.state_db)
        writer = ThreadWriter(paths.state_db)
        writer.start()
        scheduler = Scheduler(paths, load_config(paths.config_file), state, writer=writer)
        scheduler.plan.load_all(starting=True)
        loop_task = asyncio.ensure_future(scheduler.run_forever())
        deadline = asyncio.get_running_loop().time() + 15
        while len(state.list_runs(limit=None, status="succeeded")) < TASKS:
            assert asyncio.get_running_loop().time() < deadline, "the fires did not all run"
            await asyncio.sleep(0.1)
        scheduler.stopping = True
        scheduler.wake.set()
        await loop_task
        await asyncio.gather(*scheduler.runs.values(), return_exceptions=True)
        await writer.close()
        runs = state.list_runs(limit=None)
        return writer.committed_now, len(runs), sorted({r.status for r in runs})

    return asyncio.run(main())


def test_many_fires_due_at_once_share_the_loop_and_the_writer(tmp_path: Path) -> None:
    on_loop, rows, statuses = fire_all_at_once(tmp_path)
    assert rows == TASKS and statuses == ["succeeded"]
    # The first fires' rows on the loop; once the turn's 2 ms are spent (each commit takes
    # 0.1 ms or more), the others through the writer thread.
    assert 1 <= on_loop < TASKS


def test_within_the_budget_every_row_is_committed_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "INLINE_BUDGET", 60.0)
    on_loop, rows, _ = fire_all_at_once(tmp_path)
    assert rows == TASKS and on_loop == TASKS


def test_with_no_budget_every_row_goes_to_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "INLINE_BUDGET", 0.0)
    on_loop, rows, _ = fire_all_at_once(tmp_path)
    assert rows == TASKS and on_loop == 0
