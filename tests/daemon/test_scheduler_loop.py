"""The scheduler loop in-process: one wake-up per burst, no false clock jumps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daycare_cli.config import load_config
from daycare_cli.daemon.scheduler import Scheduler
from daycare_cli.store.paths import Paths
from daycare_cli.store.state import State


def make_home(tmp_path: Path, tasks: dict[str, str], config: str = "") -> Paths:
    (tmp_path / "tasks").mkdir()
    for task_id, text in tasks.items():
        (tmp_path / "tasks" / f"{task_id}.md").write_text(text)
    (tmp_path / "config.toml").write_text(config)
    return Paths.resolve(home=tmp_path)


async def run_loop(paths: Paths, seconds: float) -> State:
    state = State.open(paths.state_db)
    scheduler = Scheduler(paths, load_config(paths.config_file), state)
    scheduler.load_all(starting=True)
    loop_task = asyncio.get_running_loop().create_task(scheduler.run_forever())
    await asyncio.sleep(seconds)
    scheduler.stopping = True
    scheduler.wake.set()
    await loop_task
    await asyncio.gather(*scheduler.runs.values(), return_exceptions=True)
    return state


def test_a_long_sleep_between_fires_is_not_a_clock_jump(tmp_path: Path) -> None:
    # The loop sleeps ~6 s: more than the jump tolerance (5 s) of monotonic vs wall time.
    paths = make_home(tmp_path, {"slow": "---\ntriggers:\n  - every: 6s\n---\nhi\n"})
    state = asyncio.run(run_loop(paths, 6.5))
    assert [e.kind for e in state.list_events(limit=None) if e.kind == "clock.jump"] == []
    assert [r.status for r in state.list_runs(task="slow")] == ["succeeded"]


def test_intervals_of_one_daemon_start_fire_in_the_same_wake_up(tmp_path: Path) -> None:
    # `every` counts from the daemon's start: tasks loaded one after another share slots.
    tasks = {f"t{i}": "---\ntriggers:\n  - every: 1s\n---\nhi\n" for i in range(10)}
    paths = make_home(tmp_path, tasks, "max_concurrent_runs = 10\n")
    state = asyncio.run(run_loop(paths, 1.5))
    slots = {r.slot for r in state.list_runs(limit=None)}
    assert len(state.list_runs(limit=None)) == 10
    assert len(slots) == 1
