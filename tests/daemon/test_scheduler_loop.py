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


def late_fire_rows(tmp_path: Path, policy: str) -> list[tuple[str, str]]:
    """A task `every: 60s` whose fire comes due 5 minutes late, as after a suspend."""
    from datetime import UTC, datetime, timedelta

    from daycare_cli.daemon.scheduler import Fire

    text = f"---\ntriggers:\n  - every: 60s\ncatch_up: {policy}\ncatch_up_window: 1h\n---\nhi\n"
    paths = make_home(tmp_path, {"tick": text})

    async def main() -> State:
        state = State.open(paths.state_db)
        scheduler = Scheduler(paths, load_config(paths.config_file), state)
        scheduler.load_all(starting=True)
        sched = scheduler.tasks["tick"]
        slot = datetime.now(UTC) - timedelta(minutes=5, seconds=30)
        # The loop slept through five slots: the first due one pops now.
        scheduler.handle(
            Fire(slot.timestamp(), 0, "tick", "every", slot, "schedule", 1, sched.generation)
        )
        while scheduler.heap and scheduler.heap[0].kind == "catch-up":
            import heapq

            fire = heapq.heappop(scheduler.heap)
            scheduler.handle(fire)
        while scheduler.runs or any(s.queued for s in scheduler.tasks.values()):
            await asyncio.gather(*scheduler.runs.values(), return_exceptions=True)
            await asyncio.sleep(0.01)
        return state

    state = asyncio.run(main())
    rows = sorted(state.list_runs(limit=None), key=lambda r: r.slot.timestamp() if r.slot else 0)
    return [(r.trigger, r.status) for r in rows]


def test_a_late_fire_after_a_suspend_follows_catch_up_latest(tmp_path: Path) -> None:
    rows = late_fire_rows(tmp_path, "latest")
    assert rows == [("schedule", "missed")] * 5 + [("catch-up", "succeeded")]


def test_a_late_fire_after_a_suspend_follows_catch_up_all(tmp_path: Path) -> None:
    rows = late_fire_rows(tmp_path, "all")
    assert rows == [("catch-up", "succeeded")] * 6


def test_a_late_fire_after_a_suspend_follows_catch_up_skip(tmp_path: Path) -> None:
    rows = late_fire_rows(tmp_path, "skip")
    assert rows == [("schedule", "missed")] * 6


def test_a_one_off_missed_beyond_its_window_is_recorded_and_archived(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    when = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f'---\ntriggers:\n  - at: "{when}"\n---\nCall the dentist.\n'
    paths = make_home(tmp_path, {"dentist": text})
    state = asyncio.run(run_loop(paths, 0.2))
    assert [(r.status, r.trigger) for r in state.list_runs(limit=None)] == [("missed", "schedule")]
    assert not (paths.tasks_dir / "dentist.md").exists()
    assert (paths.archive_dir / "dentist.md").exists()
    [archived] = [e for e in state.list_events(limit=None) if e.kind == "task.archived"]
    assert archived.detail == {"path": str(paths.archive_dir / "dentist.md"), "reason": "missed"}


def test_slots_of_a_trigger_that_never_fired_are_missed_after_downtime(tmp_path: Path) -> None:
    """A daemon stopped before a new task's first slot still sees that slot at restart."""
    from datetime import UTC, datetime, timedelta

    text = "---\nschedule: '* * * * *'\ncatch_up_window: 1h\n---\nhi\n"
    paths = make_home(tmp_path, {"minute": text})

    async def first_start() -> None:
        state = State.open(paths.state_db)
        Scheduler(paths, load_config(paths.config_file), state).load_all(starting=True)
        planned = state.get_trigger_state("minute", "cron").last_slot
        assert planned is not None
        assert abs((datetime.now(UTC) - planned).total_seconds()) < 5
        # Pretend that start was 3.5 minutes ago and the daemon has been down since.
        state.set_trigger_state("minute", "cron", last_slot=planned - timedelta(minutes=3.5))
        state.close()

    asyncio.run(first_start())
    state = asyncio.run(run_loop(paths, 0.5))
    rows = sorted(state.list_runs(limit=None), key=lambda r: r.slot.timestamp() if r.slot else 0)
    # 3.5 minutes hold 3 or 4 minute boundaries, depending on when the test runs.
    assert len(rows) in (3, 4)
    assert [r.status for r in rows] == ["missed"] * (len(rows) - 1) + ["succeeded"]
    assert rows[-1].trigger == "catch-up"
